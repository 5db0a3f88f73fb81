//! A local stand-in for the few Stripe HTTP endpoints Estate calls (the network is closed
//! in tests). It records every request, answers with the fields Stripe would, and honours
//! `Idempotency-Key` as Stripe does: a repeated key gets the first answer again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Path;
use poem::{EndpointExt, Request, Response, Route, Server, handler};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub form: HashMap<String, String>,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    answers: Mutex<HashMap<String, Value>>,
    subscriptions: Mutex<HashMap<String, Value>>,
    next_id: AtomicU64,
    fail: AtomicBool,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub url: String,
    state: Arc<State>,
}

/// Period end the fake reports for every subscription (Unix seconds).
pub const PERIOD_END: i64 = 4_102_444_800; // 2100-01-01

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

impl FakeStripe {
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let app = Route::new().at("/*path", answer).data(state.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        FakeStripe {
            url: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests to `path` so far.
    pub fn to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// Changes a subscription as someone in Stripe's dashboard would, with no webhook.
    pub fn change_subscription(&self, id: &str, price: &str, status: &str) {
        let mut subs = self.state.subscriptions.lock().unwrap();
        let sub = subs.get_mut(id).expect("a subscription the fake made");
        sub["items"]["data"][0]["price"]["id"] = json!(price);
        sub["status"] = json!(status);
    }

    /// Makes every call fail (500) until called with `false`.
    pub fn fail(&self, failing: bool) {
        self.state.fail.store(failing, Ordering::SeqCst);
    }
}

fn next(state: &State, prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        state.next_id.fetch_add(1, Ordering::SeqCst) + 1
    )
}

fn subscription(id: &str, item: &str, price: &str, cancel: bool) -> Value {
    json!({
        "id": id,
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": cancel,
        "items": {"object": "list", "data": [
            {"id": item, "current_period_end": PERIOD_END, "price": {"id": price}}
        ]}
    })
}

#[handler]
async fn answer(
    req: &Request,
    Path(path): Path<String>,
    body: String,
    state: poem::web::Data<&Arc<State>>,
) -> Response {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let recorded = Recorded {
        method: req.method().to_string(),
        path: format!("/{path}"),
        form: parse_form(&body),
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
    };
    state.requests.lock().unwrap().push(recorded.clone());
    let json_response = |status: StatusCode, value: Value| {
        Response::builder()
            .status(status)
            .content_type("application/json")
            .body(value.to_string())
    };
    if state.fail.load(Ordering::SeqCst) {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"type": "api_error", "message": "the fake is failing on purpose"}}),
        );
    }
    if let Some(key) = &recorded.idempotency_key
        && let Some(first) = state.answers.lock().unwrap().get(key)
    {
        return json_response(StatusCode::OK, first.clone());
    }
    let form = &recorded.form;
    let value = match (recorded.method.as_str(), recorded.path.as_str()) {
        ("POST", "/v1/customers") => json!({"id": next(&state, "cus"), "object": "customer"}),
        ("POST", "/v1/subscriptions") => {
            let id = next(&state, "sub");
            let sub = subscription(&id, &next(&state, "si"), &form["items[0][price]"], false);
            state.subscriptions.lock().unwrap().insert(id, sub.clone());
            sub
        }
        ("POST", p) if p.starts_with("/v1/subscriptions/") => {
            let id = p.trim_start_matches("/v1/subscriptions/").to_string();
            let mut subs = state.subscriptions.lock().unwrap();
            let Some(current) = subs.get(&id).cloned() else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": {"type": "invalid_request_error", "message": "No such subscription"}}),
                );
            };
            let item = current["items"]["data"][0]["id"]
                .as_str()
                .unwrap()
                .to_string();
            let price = form.get("items[0][price]").cloned().unwrap_or_else(|| {
                current["items"]["data"][0]["price"]["id"]
                    .as_str()
                    .unwrap()
                    .into()
            });
            let cancel = form
                .get("cancel_at_period_end")
                .map(|v| v == "true")
                .unwrap_or(false);
            let sub = subscription(&id, &item, &price, cancel);
            subs.insert(id, sub.clone());
            sub
        }
        ("GET", p) if p.starts_with("/v1/subscriptions/") => {
            let id = p.trim_start_matches("/v1/subscriptions/");
            match state.subscriptions.lock().unwrap().get(id) {
                Some(sub) => sub.clone(),
                None => {
                    return json_response(
                        StatusCode::NOT_FOUND,
                        json!({"error": {"type": "invalid_request_error", "message": "No such subscription"}}),
                    );
                }
            }
        }
        ("POST", "/v1/payment_intents") => {
            let id = next(&state, "pi");
            json!({
                "id": id,
                "object": "payment_intent",
                "amount": form["amount"].parse::<i64>().unwrap(),
                "currency": form["currency"],
                "client_secret": format!("{id}_secret_fake"),
                "status": "requires_payment_method",
                "metadata": {
                    "company_id": form.get("metadata[company_id]"),
                    "allocation_id": form.get("metadata[allocation_id]"),
                    "user_id": form.get("metadata[user_id]"),
                }
            })
        }
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"type": "invalid_request_error", "message": "unknown path"}}),
            );
        }
    };
    if let Some(key) = &recorded.idempotency_key {
        state
            .answers
            .lock()
            .unwrap()
            .insert(key.clone(), value.clone());
    }
    json_response(StatusCode::OK, value)
}
