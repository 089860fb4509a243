//! The gateway process: command line, config, services. `portico` (src/main.rs) runs it with
//! the built-in plugins; a binary of the user's can run it with plugins of its own
//! (`examples/custom_plugin.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

use crate::config::{standalone, EtcdSettings, GatewayConfig, Provider};
use crate::plugin::Registry;
use crate::proxy::guard::{ClientLimits, ConnectionCap, HeaderDeadline};
use crate::proxy::{ClientTimeouts, Gateway};
use crate::status::{SourceStatus, StatusApp};
use crate::sync::etcd::{EtcdService, EtcdSync};
use crate::sync::yaml::{YamlSource, YamlWatch};
use crate::tables::Store;

/// An API gateway on Pingora, configured in APISIX's layout (standalone YAML or etcd).
#[derive(Parser, Debug)]
#[command(name = "portico", version, about)]
struct Cli {
    /// The gateway's config file.
    #[arg(short, long, default_value = "conf/config.yaml")]
    conf: PathBuf,
    /// Test the configuration (config file and resources) and exit.
    #[arg(short, long)]
    test: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    /// Take over the listeners of a running instance (graceful upgrade).
    #[arg(short, long)]
    upgrade: bool,
}

fn test_config(config: &GatewayConfig, conf: &std::path::Path) -> ExitCode {
    match config.config.provider {
        Provider::Etcd => {
            let Some(settings) = config.etcd.as_ref() else {
                return ExitCode::FAILURE;
            };
            let client = match etcd_client(settings) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: etcd: {e}", conf.display());
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start a runtime to read etcd: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Every item under the prefix, checked as the sync checks it.
            match runtime.block_on(crate::sync::etcd::check_prefix(&client, &settings.prefix)) {
                Ok((counts, invalid)) => {
                    for r in &invalid {
                        eprintln!("etcd {}: {r}", settings.prefix);
                    }
                    println!(
                        "etcd {}: {}",
                        settings.prefix,
                        counts
                            .iter()
                            .map(|(k, v)| format!("{v} {k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if invalid.is_empty() {
                        println!("configuration {} is ok", conf.display());
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("{} invalid item(s)", invalid.len());
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!(
                        "{}: cannot read the resources from etcd: {e}",
                        conf.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Provider::Yaml => match standalone::load(&config.config.yaml) {
            Ok(mut loaded) => {
                // What only shows once compiled: shared consumer keys, plugins' upstreams.
                let tables = crate::tables::Tables::compile(
                    loaded.config.clone(),
                    Vec::new(),
                    &crate::tables::Tables::default(),
                );
                loaded.rejected.extend(tables.conflicts.iter().cloned());
                loaded.rejected.extend(tables.route_problems().cloned());
                for r in &loaded.rejected {
                    eprintln!("{}: {r}", config.config.yaml.display());
                }
                println!(
                    "{}: {} routes, {} services, {} upstreams",
                    config.config.yaml.display(),
                    loaded.config.routes.len(),
                    loaded.config.services.len(),
                    loaded.config.upstreams.len()
                );
                if loaded.rejected.is_empty() {
                    println!("configuration {} is ok", conf.display());
                    ExitCode::SUCCESS
                } else {
                    eprintln!("{} invalid item(s)", loaded.rejected.len());
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The etcd client described by `etcd:` in config.yaml.
fn etcd_client(s: &EtcdSettings) -> Result<crate::etcd::Client, crate::etcd::Error> {
    use crate::etcd::{ClientOptions, HealthOptions, Pem, TlsOptions};
    crate::etcd::Client::new(ClientOptions {
        endpoints: s.endpoints.clone(),
        user: s.user.clone(),
        password: s.password.clone(),
        timeout: Duration::from_secs_f64(s.timeout),
        tls: TlsOptions {
            verify: s.tls.verify,
            ca: s.tls.ca.clone().map(Pem::File),
            cert: s.tls.cert.clone().map(Pem::File),
            key: s.tls.key.clone().map(Pem::File),
            sni: s.tls.sni.clone(),
        },
        health: HealthOptions {
            fail_timeout: Duration::from_secs_f64(s.fail_timeout),
            ..Default::default()
        },
        max_response_bytes: usize::try_from(s.max_response_size).unwrap_or(usize::MAX),
        ..Default::default()
    })
}

/// Runs the gateway with the plugins of `registry` (those config.yaml's `plugins:` enables),
/// as the command line says.
pub fn run(mut registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    crate::logs::errors::init();

    let config = match GatewayConfig::load(&cli.conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(names) = &config.plugins {
        if let Err(e) = registry.enable_only(names) {
            eprintln!("{}: {e}", cli.conf.display());
            return ExitCode::FAILURE;
        }
    }
    match crate::keyring::Keyring::new(&config.data_encryption.keyring) {
        Ok(k) => {
            crate::keyring::install(k.clone());
            registry.set_keyring(k);
        }
        Err(e) => {
            eprintln!("{}: {e}", cli.conf.display());
            return ExitCode::FAILURE;
        }
    }
    if registry.install().is_err() {
        eprintln!("a plugin registry was already in use");
        return ExitCode::FAILURE;
    }
    if cli.test {
        return test_config(&config, &cli.conf);
    }

    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let server_conf = ServerConf {
        threads: config.proxy.threads,
        grace_period_seconds: Some(0),
        work_stealing: false,
        // Idle upstream connections of all peers together; each peer's own limit is its
        // upstream's keepalive_pool.size (upstream/keepalive.rs).
        upstream_keepalive_pool_size: 4096,
        graceful_shutdown_timeout_seconds: Some(config.proxy.shutdown_timeout),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let store = Arc::new(Store::new());
    let status = match config.config.provider {
        Provider::Yaml => {
            let status = SourceStatus::new("yaml");
            let source = YamlSource::new(config.config.yaml.clone(), store.clone(), status.clone());
            let initial = source.initial_load();
            server.add_service(background_service(
                "standalone yaml",
                YamlWatch { source, initial },
            ));
            status
        }
        Provider::Etcd => {
            let Some(settings) = config.etcd.as_ref() else {
                eprintln!(
                    "{}: config.provider is etcd but there is no etcd: section",
                    cli.conf.display()
                );
                return ExitCode::FAILURE;
            };
            let client = match etcd_client(settings) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: etcd: {e}", cli.conf.display());
                    return ExitCode::FAILURE;
                }
            };
            let status = SourceStatus::new("etcd");
            let saved = (!settings.saved_config.as_os_str().is_empty())
                .then(|| settings.saved_config.clone());
            let sync = EtcdSync::new(
                client,
                settings.prefix.clone(),
                store.clone(),
                status.clone(),
                saved,
                Duration::from_secs_f64(settings.watch_idle_timeout),
            );
            server.add_service(background_service("etcd sync", EtcdService(sync)));
            if config.admin.enabled() {
                // Its own client: its calls never queue behind the sync's.
                let client = match etcd_client(settings) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{}: etcd: {e}", cli.conf.display());
                        return ExitCode::FAILURE;
                    }
                };
                let app = crate::admin::AdminApp::new(
                    &config.admin,
                    client,
                    settings.prefix.clone(),
                    Some(store.clone()),
                );
                let mut admin = Service::new("admin api".to_string(), app);
                admin.add_tcp(&config.admin.listen);
                server.add_service(admin);
                log::info!("Admin API on {}", config.admin.listen);
            }
            status
        }
    };

    server.add_service(background_service(
        "health checks",
        crate::upstream::checker::HealthService {
            store: store.clone(),
        },
    ));

    let pools = Arc::new(crate::upstream::keepalive::Pools::default());
    if let Some(target) = config.access_log.target() {
        server.add_service(background_service(
            "access log",
            crate::logs::access::AccessLogService {
                target,
                buffer: config.access_log.buffer,
            },
        ));
        crate::logs::want_details();
    }
    let p = &config.proxy;
    let mut gateway = Gateway::new(store.clone(), p.upstream_ca_certs.clone(), pools.clone())
        .with_client_timeouts(ClientTimeouts {
            body: Duration::from_secs_f64(p.client_body_timeout),
            send: Duration::from_secs_f64(p.send_timeout),
            keepalive: (p.keepalive_timeout > 0.0)
                .then(|| Duration::from_secs_f64(p.keepalive_timeout)),
            max_body: p.client_max_body_size,
        });
    if config.access_log.target().is_some() {
        gateway = gateway.with_access_log(&config.access_log.format);
    }
    let limits = ClientLimits {
        header_timeout: Duration::from_secs_f64(p.client_header_timeout),
        keepalive_timeout: (p.keepalive_timeout > 0.0)
            .then(|| Duration::from_secs_f64(p.keepalive_timeout)),
        max_connections: p.max_connections,
    };
    let app = ConnectionCap::new(
        HeaderDeadline::new(
            pingora_proxy::http_proxy(&server.configuration, gateway),
            limits,
        ),
        limits.max_connections,
    );
    let mut proxy = Service::new("portico proxy".to_string(), app);
    for addr in &config.proxy.listen {
        proxy.add_tcp(addr);
    }
    if let Some(port) = config
        .proxy
        .tls_listen
        .first()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    {
        crate::net::set_https_port(port.port());
    }
    for addr in &config.proxy.tls_listen {
        match tls_settings(&store, &config.proxy) {
            Ok(settings) => proxy.add_tls_with_settings(addr, None, settings),
            Err(e) => {
                eprintln!("proxy.tls_listen {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    server.add_service(proxy);

    // Validated when the config was read.
    let proxy_addrs = config
        .proxy
        .listen
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if !config.metrics.listen.is_empty() {
        let settings = crate::metrics::ExportSettings {
            uri: config.metrics.export_uri.clone(),
            prefix: config.metrics.metric_prefix.clone(),
            etcd_prefix: config.etcd.as_ref().map(|e| e.prefix.clone()),
        };
        let app = crate::metrics::MetricsApp::new(settings, store.clone(), status.clone());
        let mut metrics = Service::new("prometheus exporter".to_string(), app);
        metrics.add_tcp(&config.metrics.listen);
        server.add_service(metrics);
        log::info!(
            "Prometheus metrics on http://{}{}",
            config.metrics.listen,
            config.metrics.export_uri
        );
    }
    if !config.status.listen.is_empty() {
        let mut status_service = Service::new(
            "status".to_string(),
            StatusApp::new(store, status, pools, proxy_addrs),
        );
        status_service.add_tcp(&config.status.listen);
        server.add_service(status_service);
    }
    log::info!(
        "portico {} listening on {}{}",
        env!("CARGO_PKG_VERSION"),
        config.proxy.listen.join(", "),
        if config.proxy.tls_listen.is_empty() {
            String::new()
        } else {
            format!(", HTTPS on {}", config.proxy.tls_listen.join(", "))
        }
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    ExitCode::SUCCESS
}

/// An HTTPS listener's settings: certificates by SNI from the snapshot, TLS 1.2 and 1.3
/// only, HTTP/2 offered by ALPN unless `proxy.http2` is off.
fn tls_settings(
    store: &Arc<Store>,
    p: &crate::config::ProxyConfig,
) -> Result<pingora_core::listeners::tls::TlsSettings, String> {
    let callbacks = Box::new(crate::tls::SniCerts::new(
        store.clone(),
        p.fallback_sni.clone(),
    ));
    let mut settings = pingora_core::listeners::tls::TlsSettings::with_callbacks(callbacks)
        .map_err(|e| e.to_string())?;
    settings
        .set_min_proto_version(Some(pingora_core::tls::ssl::SslVersion::TLS1_2))
        .map_err(|e| e.to_string())?;
    if p.http2 {
        settings.enable_h2();
    }
    Ok(settings)
}

/// Ctrl-C (SIGINT) stops the gateway like SIGTERM: listeners close, in-flight requests get
/// `proxy.shutdown_timeout` seconds. (Pingora's own SIGINT path skips telling services to
/// stop, and an accept loop can then spin instead of exiting.) SIGQUIT is a graceful upgrade.
struct Signals;

#[async_trait::async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for signal {kind:?}: {e}");
                None
            }
        };
        let (mut quit, mut term, mut int) = (
            listen(SignalKind::quit()),
            listen(SignalKind::terminate()),
            listen(SignalKind::interrupt()),
        );
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut quit) => ShutdownSignal::GracefulUpgrade,
            _ = next(&mut term) => ShutdownSignal::GracefulTerminate,
            _ = next(&mut int) => {
                log::info!("SIGINT received: stopping");
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}
