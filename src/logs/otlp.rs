//! OTLP/HTTP export of the `opentelemetry` plugin's spans: each batch becomes one
//! `ExportTraceServiceRequest` in protobuf, POSTed to the collector's `/v1/traces`, which is
//! what APISIX sends.
//!
//! The batch is encoded straight from the queued spans, field by field, so the log thread
//! never copies a span to build the request message around it.

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::encoding::{encode_key, encode_varint, message, WireType};

use super::batch::Sink;
use super::sink::HttpPost;

/// What OTLP/HTTP collectors take in its binary encoding.
const CONTENT_TYPE: &str = "application/x-protobuf";

/// Sends spans to an OTLP/HTTP collector, under one resource and instrumentation scope.
pub struct OtlpSink {
    pub post: HttpPost,
    pub resource: Resource,
    pub scope: InstrumentationScope,
}

#[async_trait]
impl Sink<Span> for OtlpSink {
    async fn send(&self, batch: &[Span]) -> Result<(), String> {
        let body = encode(&self.resource, &self.scope, batch);
        self.post.send(body, CONTENT_TYPE).await
    }
}

/// `ExportTraceServiceRequest { resource_spans: [ResourceSpans { resource, scope_spans:
/// [ScopeSpans { scope, spans }] }] }`, as prost would encode it.
pub fn encode(resource: &Resource, scope: &InstrumentationScope, spans: &[Span]) -> Vec<u8> {
    // ScopeSpans: scope = 1, spans = 2.
    let mut scope_spans = Vec::new();
    message::encode(1, scope, &mut scope_spans);
    for span in spans {
        message::encode(2, span, &mut scope_spans);
    }
    // ResourceSpans: resource = 1, scope_spans = 2.
    let mut resource_spans = Vec::with_capacity(scope_spans.len() + 256);
    message::encode(1, resource, &mut resource_spans);
    length_delimited(2, &scope_spans, &mut resource_spans);
    // ExportTraceServiceRequest: resource_spans = 1.
    let mut request = Vec::with_capacity(resource_spans.len() + 8);
    length_delimited(1, &resource_spans, &mut request);
    request
}

/// Field `tag` holding the already encoded message `bytes`.
fn length_delimited(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;

    #[test]
    fn the_hand_made_request_is_what_prost_would_encode() {
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("APISIX".into())),
                }),
                ..KeyValue::default()
            }],
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: "portico".into(),
            version: "1".into(),
            ..InstrumentationScope::default()
        };
        let span = |name: &str| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            ..Span::default()
        };
        let spans = vec![span("GET /a"), span("GET /b")];
        let ours = encode(&resource, &scope, &spans);
        let theirs = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: spans.clone(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(ours, theirs.encode_to_vec());
        let back = ExportTraceServiceRequest::decode(&ours[..]).unwrap();
        assert_eq!(
            back.resource_spans[0].scope_spans[0].spans[1].name,
            "GET /b"
        );
    }
}
