// trailkeep console: checks an event's evidence in the browser, with
// WebCrypto only (SHA-256, Ed25519), the same steps as
// `trailkeep verify --evidence` (src/verify/evidence.rs):
//  1. event_hash:   SHA-256 of the canonical body (the stored line without
//                   its top-level "hash") equals the stored hash;
//  2. event_fields: the body names this stream and seq, the proof this leaf;
//  3. merkle_path:  the RFC 9162 leaf hash SHA-256(0x00 || event hash) climbs
//                   the audit path (RFC 9162 §2.1.3.2) to the proof's root;
//  4. signature:    the checkpoint note is signed by the public key (C2SP
//                   signed-note, Ed25519);
//  5. checkpoint:   the note names this stream, the proof's size and root.
// The evidence comes from the server; the key too. The result says so.

const enc = new TextEncoder();

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const tob64 = (u) => btoa(String.fromCharCode(...u));
const hex = (u) => [...u].map((b) => b.toString(16).padStart(2, '0')).join('');
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));

class StepFailed extends Error {
  constructor(step, message) {
    super(message);
    this.step = step;
  }
}

// Index after the JSON string starting at s[i] === '"'.
function skipString(s, i) {
  if (s[i] !== '"') return -1;
  i += 1;
  while (i < s.length) {
    if (s[i] === '"') return i + 1;
    i += s[i] === '\\' ? 2 : 1;
  }
  return -1;
}

// Index after the JSON value starting at s[i].
function skipValue(s, i) {
  if (s[i] === '"') return skipString(s, i);
  if (s[i] === '{' || s[i] === '[') {
    let depth = 0;
    while (i < s.length) {
      const c = s[i];
      if (c === '"') {
        i = skipString(s, i);
        if (i < 0) return -1;
        continue;
      }
      if (c === '{' || c === '[') depth += 1;
      if (c === '}' || c === ']') {
        depth -= 1;
        if (depth === 0) return i + 1;
      }
      i += 1;
    }
    return -1;
  }
  while (i < s.length && !',}]'.includes(s[i])) i += 1;
  return i;
}

// The stored line without its top-level "hash" member, and that hash: the
// canonical body the event hash was computed over (as the server's
// split_stored_line does for a canonical line).
function splitStoredLine(line) {
  if (line[0] !== '{' || line[line.length - 1] !== '}') return null;
  let i = 1;
  while (i < line.length) {
    const keyEnd = skipString(line, i);
    if (keyEnd < 0 || line[keyEnd] !== ':') return null;
    const key = JSON.parse(line.slice(i, keyEnd));
    const valEnd = skipValue(line, keyEnd + 1);
    if (valEnd < 0) return null;
    if (key === 'hash') {
      const hash = JSON.parse(line.slice(keyEnd + 1, valEnd));
      if (typeof hash !== 'string') return null;
      if (line[valEnd] === ',') return { body: line.slice(0, i) + line.slice(valEnd + 1), hash };
      if (line[valEnd] === '}' && i > 1) return { body: line.slice(0, i - 1) + line.slice(valEnd), hash };
      return null;
    }
    if (line[valEnd] === ',') i = valEnd + 1;
    else return null;
  }
  return null;
}

// RFC 9162 §2.1.3.2: the root an audit path reaches, or null.
async function climb(leaf, index, size, path) {
  if (index >= size) return null;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(concat(Uint8Array.of(1), p, r));
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await sha256(concat(Uint8Array.of(1), r, p));
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

// `name+hexkeyid+base64(0x01 || key)`.
async function parseKey(text) {
  const first = text.indexOf('+');
  const second = text.indexOf('+', first + 1);
  if (first < 1 || second < 0) throw new StepFailed('signature', 'the public key is not name+keyid+key');
  const name = text.slice(0, first);
  const id = text.slice(first + 1, second);
  const raw = b64(text.slice(second + 1));
  if (raw.length !== 33 || raw[0] !== 1) throw new StepFailed('signature', 'the public key is not an Ed25519 signed-note key');
  const key = raw.slice(1);
  // Key id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key).
  const want = (await sha256(concat(enc.encode(name), Uint8Array.of(0x0a, 0x01), key))).slice(0, 4);
  if (hex(want) !== id) throw new StepFailed('signature', `the public key's id ${id} does not match its key (${hex(want)})`);
  return { name, id: want, key };
}

// C2SP signed-note: the text, a blank line, lines `— name base64(keyid || sig)`.
async function openNote(note, pub) {
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new StepFailed('signature', 'the checkpoint note has no signature block');
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2).split('\n').filter((l) => l !== '');
  let sig = null;
  for (const line of lines) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new StepFailed('signature', `malformed signature line ${JSON.stringify(line)}`);
    const raw = b64(m[2]);
    if (m[1] === pub.name && raw.length >= 4 && equal(raw.slice(0, 4), pub.id)) sig = raw.slice(4);
  }
  if (!sig) throw new StepFailed('signature', `the note has no signature by ${pub.name}+${hex(pub.id)}`);
  if (sig.length !== 64) throw new StepFailed('signature', 'the signature is not 64 bytes');
  let key;
  try {
    key = await crypto.subtle.importKey('raw', pub.key, { name: 'Ed25519' }, false, ['verify']);
  } catch (e) {
    const err = new StepFailed('signature', `this browser's WebCrypto has no Ed25519 (${e.name}): the signature was not checked here. Use a current browser, or run trailkeep verify --evidence on the downloaded file`);
    err.unsupported = true;
    throw err;
  }
  const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, sig, enc.encode(text));
  if (!ok) throw new StepFailed('signature', `the signature by ${pub.name}+${hex(pub.id)} does not verify over the checkpoint text`);
  return text;
}

async function check(ev, done) {
  // 1. The event's hash.
  const split = splitStoredLine(ev.event);
  if (!split) throw new StepFailed('event_hash', 'the event is not a stored event line');
  const computed = await sha256(enc.encode(split.body));
  if (hex(computed) !== split.hash) {
    throw new StepFailed('event_hash', `the SHA-256 of the event's canonical body is ${hex(computed)}, but its hash says ${split.hash}: the event was changed`);
  }
  done('event_hash', `SHA-256 of the canonical body is ${split.hash}`);
  // 2. The body is this event.
  const body = JSON.parse(split.body);
  if (body.stream !== ev.stream || body.seq !== ev.seq) {
    throw new StepFailed('event_fields', `the body says stream ${body.stream} seq ${body.seq}, the page shows stream ${ev.stream} seq ${ev.seq}`);
  }
  if (ev.proof.seq !== ev.seq || ev.proof.leaf_index !== ev.seq - 1) {
    throw new StepFailed('event_fields', `the proof is for seq ${ev.proof.seq}, not ${ev.seq}`);
  }
  done('event_fields', `the body is stream ${ev.stream} seq ${ev.seq}`);
  // 3. The Merkle path, from the hash computed above (not the stored one).
  const leaf = await sha256(concat(Uint8Array.of(0), computed));
  const root = await climb(leaf, ev.proof.leaf_index, ev.proof.size, ev.proof.hashes.map(b64));
  const claimed = b64(ev.proof.root);
  if (!root || !equal(root, claimed)) {
    throw new StepFailed('merkle_path', `the leaf hash ${tob64(leaf)} with ${ev.proof.hashes.length} path hashes does not reach the root ${ev.proof.root} of size ${ev.proof.size}`);
  }
  done('merkle_path', `leaf ${tob64(leaf)} and ${ev.proof.hashes.length} path hashes reach root ${ev.proof.root}`);
  // 4. The signature.
  const pub = await parseKey(ev.public_key);
  const text = await openNote(ev.checkpoint, pub);
  done('signature', `the checkpoint note is signed by ${pub.name}+${hex(pub.id)} (Ed25519)`);
  // 5. The checkpoint: origin, size, root.
  const [origin, size, rootLine] = text.split('\n');
  const want = `${pub.name}/${ev.stream}`;
  if (origin !== want) throw new StepFailed('checkpoint', `the checkpoint is for ${origin}, not ${want}`);
  if (size !== String(ev.proof.size)) throw new StepFailed('checkpoint', `the checkpoint has size ${size}, the proof ${ev.proof.size}`);
  if (rootLine !== ev.proof.root) throw new StepFailed('checkpoint', `the checkpoint's root is ${rootLine}, the proof reaches ${ev.proof.root}`);
  done('checkpoint', `checkpoint ${origin} size ${size} root ${rootLine}`);
  return { size, root: rootLine, key: `${pub.name}+${hex(pub.id)}` };
}

const NAMES = {
  event_hash: 'Event hash',
  event_fields: 'Event and proof match',
  merkle_path: 'Merkle path',
  signature: 'Checkpoint signature',
  checkpoint: 'Checkpoint contents',
};

export async function start(main) {
  const data = main.querySelector('#evidence');
  const result = main.querySelector('#proof-result');
  const steps = main.querySelector('#proof-steps');
  if (!data || !result) return;
  const say = (cls, text) => {
    result.className = `status-line ${cls}`;
    result.textContent = text;
  };
  const item = (cls, name, text) => {
    if (!steps) return;
    const li = document.createElement('li');
    li.className = cls;
    li.setAttribute('data-step', name);
    const strong = document.createElement('strong');
    strong.textContent = `${NAMES[name] || name}: `;
    li.append(strong, text);
    steps.append(li);
  };
  let ev;
  try {
    ev = JSON.parse(data.textContent);
  } catch {
    say('bad', 'Proof FAILED: the evidence on this page is not readable JSON.');
    return;
  }
  if (!window.isSecureContext || !globalThis.crypto || !crypto.subtle) {
    say('warn', 'Not checked: this page is not a secure context (HTTPS or localhost), so the browser offers no WebCrypto. Download the evidence and run trailkeep verify --evidence.');
    return;
  }
  try {
    const r = await check(ev, (name, text) => item('good', name, text));
    say('good', `Verified: event ${ev.seq} of ${ev.stream} is included in checkpoint size ${r.size}, root ${r.root}, signed by ${r.key}. Compare that key with the one you pinned.`);
  } catch (e) {
    const name = e.step || 'internal';
    item(e.unsupported ? 'warn' : 'bad', name, e.message);
    if (e.unsupported) {
      say('warn', `Partly checked: the event hash and Merkle path were verified, but ${e.message}.`);
    } else {
      say('bad', `Proof FAILED at step "${NAMES[name] || name}": ${e.message}`);
    }
  }
}
