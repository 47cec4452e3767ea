// trailkeep console: the few live parts. No framework, no inline script
// (the Content-Security-Policy forbids it); pages work without this file,
// it only refreshes and confirms.

// Forms with data-confirm ask first.
document.addEventListener('submit', (e) => {
  const form = e.target;
  const question = form.getAttribute('data-confirm');
  if (question && !window.confirm(question)) {
    e.preventDefault();
  }
});

// Elements with an id and data-live="ms" are refreshed from the same URL
// every ms milliseconds while the page is visible and the user is not
// working inside them.
const live = [...document.querySelectorAll('[data-live][id]')];
if (live.length > 0) {
  const every = Math.min(...live.map((el) => Number(el.getAttribute('data-live')) || 10000));
  const refresh = async () => {
    if (document.hidden) return;
    let res;
    try {
      res = await fetch(window.location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html', 'X-Console-Refresh': '1' } });
    } catch {
      return;
    }
    if (res.redirected || !res.ok) return;
    const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
    for (const el of live) {
      if (el.contains(document.activeElement)) continue;
      const fresh = doc.getElementById(el.id);
      if (fresh) el.replaceChildren(...fresh.childNodes);
    }
  };
  window.setInterval(refresh, every);
}

// Page modules announce themselves with data-module on <main>: the URL
// of their script under /ui/assets/, with its content digest, so a cached
// old version is never run after an upgrade.
const main = document.getElementById('main');
const module = main && main.getAttribute('data-module');
if (module && /^\/ui\/assets\/[a-z]+\.js\?v=[0-9a-f]+$/.test(module)) {
  import(module).then((m) => m.start && m.start(main)).catch((err) => {
    console.error(`console module ${module}:`, err);
  });
}
