//! The page frame: head, navigation, sign-out.

use maud::{DOCTYPE, Markup, html};

use super::Viewer;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · trailkeep" }
            link rel="stylesheet" href=(super::assets::path("app.css"));
            link rel="icon" type="image/svg+xml" href=(super::assets::path("icon.svg"));
            script type="module" src=(super::assets::path("app.js")) {}
        }
    }
}

/// A page without navigation (sign-in, errors).
pub(super) fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header class="top" { span class="brand" { "trailkeep" } }
                main id="main" { (content) }
            }
        }
    }
}

/// The pages in the navigation: path, label, admin only.
const NAV: &[(&str, &str, bool)] = &[
    ("/ui/", "Overview", false),
    ("/ui/events", "Events", false),
    ("/ui/archive", "Archive", false),
    ("/ui/destinations", "Destinations", false),
    ("/ui/sources", "Sources", false),
    ("/ui/verify", "Verify", true),
    ("/ui/keys", "Keys", true),
];

/// A console page: skip link, navigation (admin pages for admins only),
/// who is signed in, sign-out.
pub(super) fn page(
    viewer: &Viewer,
    title: &str,
    current: &str,
    module: Option<&str>,
    content: Markup,
) -> Markup {
    let admin = viewer.is_admin();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "trailkeep" }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label, admin_only) in NAV {
                                @if admin || !admin_only {
                                    li {
                                        @if *path == current {
                                            a href=(path) aria-current="page" { (label) }
                                        } @else {
                                            a href=(path) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    form class="who" method="post" action="/ui/logout" {
                        span {
                            "Key " code { (viewer.key.id) } " · " (viewer.key.scope)
                            " · " @if viewer.key.stream == "*" { "every stream" } @else { "stream " code { (viewer.key.stream) } }
                        }
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" data-module=[module.map(|m| super::assets::path(&format!("{m}.js")))] { (content) }
            }
        }
    }
}
