//! The console over plain HTTP, as a script or an attacker drives it:
//! cookies by hand, no redirects followed.

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode, redirect};

/// A client that shows redirects instead of following them.
pub fn client() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

/// Cookie `name` as a response sets it: `name=value`, and the whole
/// `Set-Cookie` line (attributes included).
pub fn set_cookie_line(res: &reqwest::Response, name: &str) -> Option<(String, String)> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

/// `name=value` of cookie `name` in a response's `Set-Cookie` headers.
pub fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    set_cookie_line(res, name).map(|(pair, _)| pair)
}

/// The value of hidden input `name` in a page.
pub fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no hidden {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Signs in with `token` through the sign-in form (its double-submit
/// cookie included); returns the session cookie (`tk_session=…`).
pub async fn sign_in(url: &str, token: &str) -> String {
    let c = client();
    let form = c.get(format!("{url}/ui/login")).send().await.unwrap();
    let login_cookie = set_cookie(&form, "tk_login").expect("login cookie");
    let page = form.text().await.unwrap();
    let res = c
        .post(format!("{url}/ui/login"))
        .header(COOKIE, &login_cookie)
        .form(&[
            ("token", token),
            ("login", &hidden(&page, "login")),
            ("next", "/ui/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "sign-in with a valid key"
    );
    set_cookie(&res, "tk_session").expect("session cookie")
}

/// `GET path` with the session cookie: status and body.
pub async fn get(url: &str, path: &str, session: &str) -> (StatusCode, String) {
    let res = client()
        .get(format!("{url}{path}"))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}
