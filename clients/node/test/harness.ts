/**
 * Runs the real trailkeep binary for the tests (TRAILKEEP_BIN): provisions
 * a data directory and keys, starts `serve` on port 0 and reads the port
 * from its "trailkeep serving" log line (as tests/common/mod.rs
 * spawn_serving does), and a TCP proxy that can lose an answer or point
 * at a restarted server. Waits are on conditions, never fixed sleeps.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

function bin(): string {
  const b = process.env.TRAILKEEP_BIN;
  if (!b) {
    throw new Error(
      'TRAILKEEP_BIN is not set: build trailkeep (cargo build --features testing,bench) and set TRAILKEEP_BIN to target/debug/trailkeep, or run scripts/test.sh',
    );
  }
  if (!existsSync(b)) {
    throw new Error(`TRAILKEEP_BIN=${b} does not exist: build it (cargo build --features testing,bench) or point TRAILKEEP_BIN at a trailkeep binary`);
  }
  return b;
}

/** Runs a trailkeep command on `dataDir`; returns its stdout. */
export function trailkeep(dataDir: string, args: string[]): string {
  return execFileSync(bin(), ['--data-dir', dataDir, ...args], {
    env: { ...process.env, RUST_LOG: 'warn' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export interface Store {
  dataDir: string;
  /** An ingest key. */
  ingest: string;
  /** A read key. */
  read: string;
}

const dirs: string[] = [];
const children = new Set<ChildProcess>();

/** Returns a migrated data directory with an ingest and a read key (`keys create` prints the token first). */
export function provision(): Store {
  const dataDir = mkdtempSync(join(tmpdir(), 'trailkeep-node-'));
  dirs.push(dataDir);
  trailkeep(dataDir, ['migrate']);
  const key = (scope: string) => trailkeep(dataDir, ['keys', 'create', '--scope', scope]).split('\n')[0]!.trim();
  return { dataDir, ingest: key('ingest'), read: key('read') };
}

/** Kills every server still running and removes the data directories. */
export function cleanup(): void {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** Waits until `cond()` holds, polling; fails naming `what` after `timeoutMs`. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A running `trailkeep serve`. */
export class Server {
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly log: () => string,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts `serve --listen 127.0.0.1:0` on `dataDir` and waits for `/readyz`. */
  static async start(dataDir: string, extra: string[] = []): Promise<Server> {
    const child = spawn(bin(), ['--data-dir', dataDir, 'serve', '--listen', '127.0.0.1:0', ...extra], {
      env: { ...process.env, RUST_LOG: 'warn,trailkeep::server=info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.add(child);
    child.on('exit', () => children.delete(child));
    let text = '';
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`trailkeep did not start (no 'trailkeep serving' line within 20 s):\n${text}`));
      }, 20_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`trailkeep exited (${code}) before serving:\n${text}`));
      });
      // Drained for the life of the process: a full pipe would block its logging.
      createInterface({ input: child.stderr! }).on('line', (raw) => {
        const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
        text += line + '\n';
        const m = /trailkeep serving.*127\.0\.0\.1:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
    });
    const server = new Server(child, port, () => text);
    await waitFor('trailkeep /readyz', async () => {
      try {
        return (await fetch(`${server.url}/readyz`)).ok;
      } catch {
        return false;
      }
    });
    return server;
  }

  /** `kill -9`: no graceful shutdown, connections reset mid-request. */
  async kill9(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }
}

/** Writes a config file into `dir` and returns its path. */
export function configFile(dir: string, toml: string): string {
  const path = join(dir, 'test-config.toml');
  writeFileSync(path, toml);
  return path;
}

/** A stored event as `GET /v1/streams/{s}/events` returns it. */
export interface Stored {
  id: string;
  seq: number;
  type: string;
  time: string;
  actor?: unknown;
  subject?: unknown;
  data?: Record<string, unknown>;
}

/** Returns every event of `stream`, in seq order, read with a read key. */
export async function readBack(url: string, stream: string, readToken: string): Promise<Stored[]> {
  const out: Stored[] = [];
  for (;;) {
    const res = await fetch(`${url}/v1/streams/${stream}/events?from_seq=${out.length + 1}&limit=10000`, {
      headers: { authorization: `Bearer ${readToken}` },
    });
    if (res.status === 404) return out;
    if (!res.ok) throw new Error(`reading ${stream} back: HTTP ${res.status} ${await res.text()}`);
    const lines = (await res.text()).split('\n').filter((l) => l !== '');
    if (lines.length === 0) return out;
    for (const l of lines) out.push(JSON.parse(l) as Stored);
    if (lines.length < 10000) return out;
  }
}

/**
 * A TCP proxy on 127.0.0.1 (port 0) in front of trailkeep: a stable
 * address whose server can be restarted on another port, that refuses
 * (resets) connections while it has none, and that can lose the next
 * answer: it forwards the request, waits for trailkeep's first response
 * bytes (trailkeep answers only after the commit), then cuts the client's
 * connection instead of passing them on.
 */
export class Proxy {
  upstream: number | null = null;
  private dropNext = 0;
  /** Answers lost so far. */
  dropped = 0;
  private readonly sockets = new Set<net.Socket>();
  private constructor(private readonly server: net.Server, readonly port: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<Proxy> {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const proxy = new Proxy(server, (server.address() as net.AddressInfo).port);
    server.on('connection', (c) => proxy.handle(c));
    return proxy;
  }

  /** Loses the answer of the next `n` connections' first request. */
  loseNextAnswers(n: number): void {
    this.dropNext += n;
  }

  /** Resets every open connection (as a server that died would). */
  resetAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  private handle(client: net.Socket): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => {});
    if (this.upstream === null) {
      client.resetAndDestroy();
      return;
    }
    const up = net.connect(this.upstream, '127.0.0.1');
    this.sockets.add(up);
    up.on('close', () => {
      this.sockets.delete(up);
      client.destroy();
    });
    up.on('error', () => client.resetAndDestroy());
    client.on('close', () => up.destroy());
    client.pipe(up);
    if (this.dropNext > 0) {
      this.dropNext--;
      up.once('data', () => {
        this.dropped++;
        client.resetAndDestroy();
        up.destroy();
      });
    } else {
      up.pipe(client);
    }
  }

  async close(): Promise<void> {
    this.resetAll();
    await new Promise((r) => this.server.close(r));
  }
}
