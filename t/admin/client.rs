//! A client nobody here wrote: `apisix-client` from PyPI (an APISIX Admin API SDK), installed
//! into a throwaway venv, creating, listing, updating and deleting through Portico.

use std::process::Command;

use super::harness::gateway::Echo;
use super::harness::{python_venv, EtcdMember, TempDir};
use super::{Admin, ADMIN_KEY};

/// The script the SDK runs: every step asserts what Portico answered, and the gateway
/// serves the route the SDK wrote before it is deleted again.
const SCRIPT: &str = r#"
import os, sys, time, httpx
from apisix_client import ApisixClient
from apisix_client.route.models import Route
from apisix_client.upstream.models import Upstream, Node

admin = os.environ["ADMIN"]
proxy = os.environ["PROXY"]
echo = os.environ["ECHO"]
c = ApisixClient(base_url=f"http://{admin}/", api_key=os.environ["KEY"])

def served(path, want):
    for _ in range(100):
        if httpx.get(f"http://{proxy}{path}").status_code == want:
            return
        time.sleep(0.1)
    sys.exit(f"{path} never answered {want}")

assert c.upstream.create_or_update(Upstream(type="roundrobin", nodes=[Node(host=echo.split(":")[0], port=int(echo.split(":")[1]), weight=1)]), "sdk-up") == "sdk-up"
route = Route(uri="/sdk", upstream_id="sdk-up")
assert c.route.create_or_update(route, "sdk") == "sdk"
generated = c.route.create_with_id_generation(Route(uri="/sdk-gen", upstream_id="sdk-up"))
assert generated and len(generated) == 20 and generated.isdigit(), generated
assert c.route.count() == 2
got = c.route.get("sdk")
assert got.value.uri == "/sdk", got
assert {r.value.id for r in c.route.get_all()} == {"sdk", generated}
served("/sdk", 200)
served("/sdk-gen", 200)
# an update is a PUT of the whole route
assert c.route.create_or_update(Route(uri="/sdk-v2", upstream_id="sdk-up"), "sdk") == "sdk"
served("/sdk-v2", 200)
served("/sdk", 404)
assert "key-auth" in c.plugin.get_available()
assert c.route.delete("sdk") and c.route.delete(generated)
assert c.route.get("sdk") is None
assert c.route.count() == 0
served("/sdk-v2", 404)
assert c.upstream.delete("sdk-up")
print("sdk ok")
"#;

#[test]
fn a_python_admin_sdk_from_pypi_drives_portico() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let echo = Echo::start("up");
    let dir = TempDir::new("sdk");
    let python = python_venv(dir.path(), &["apisix-client==1.0.3"]);
    let script = dir.path().join("sdk.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .env("ADMIN", format!("127.0.0.1:{}", a.port))
        .env("PROXY", format!("127.0.0.1:{}", a.gateway.port))
        .env("ECHO", echo.addr())
        .env("KEY", ADMIN_KEY)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("sdk ok"),
        "the SDK failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.gateway.log()
    );
    // what the SDK left behind: nothing but the id generator
    let keys = etcd.etcdctl(&["get", "--prefix", "/apisix/", "--keys-only"]);
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys, ["/apisix/gen_id"]);
}
