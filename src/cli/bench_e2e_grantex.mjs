// `trailkeep bench e2e`, run 3: a forwarder with the behaviour of Grantex's
// `@grantex/destinations` (EventSource + DatadogDestination with their
// defaults), written for this benchmark: one connection; frames are handled
// one after another, each event parsed and handed to the destination, which
// is awaited; the destination keeps events until it holds `batch` of them,
// then posts them and the reader waits for the answer. Grantex has no flush
// timer by default (a partial batch waits for `close()`); here the last
// partial batch is posted once `total` events were read, which only helps
// this run. Errors end the process (Grantex would swallow them).
//
// usage: node bench_e2e_grantex.mjs STREAM_URL INTAKE_URL TOTAL BATCH
const [streamUrl, intakeUrl, totalArg, batchArg] = process.argv.slice(2);
const total = Number(totalArg);
const batch = Number(batchArg);

let pending = [];
async function post(events) {
  const entries = events.map((e) => ({
    ddsource: 'grantex',
    ddtags: `type:${e.type}`,
    hostname: 'grantex-auth-service',
    message: JSON.stringify(e),
    service: 'grantex',
  }));
  const res = await fetch(intakeUrl, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'DD-API-KEY': 'bench-dd-key' },
    body: JSON.stringify(entries),
  });
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`the intake answered ${res.status}`);
}

async function take(event) {
  pending.push(event);
  if (pending.length >= batch) {
    const full = pending.splice(0, batch);
    await post(full);
  }
}

const res = await fetch(streamUrl, { headers: { Accept: 'text/event-stream' } });
if (!res.ok || !res.body) throw new Error(`the upstream answered ${res.status}`);
const reader = res.body.getReader();
const text = new TextDecoder();
let carry = '';
let read = 0;
for (;;) {
  const { done, value } = await reader.read();
  if (done) break;
  carry += text.decode(value, { stream: true });
  const lines = carry.split('\n');
  carry = lines.pop() ?? '';
  for (const line of lines) {
    if (!line.startsWith('data: ')) continue;
    await take(JSON.parse(line.slice(6)));
    read += 1;
  }
  if (read >= total) {
    if (pending.length > 0) await post(pending.splice(0));
    break;
  }
}
await reader.cancel();
