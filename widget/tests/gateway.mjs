// The real peers of the end-to-end test (e2e.mjs): the `callgate` binary serving a temporary config and
// SQLite database, SIPp as the PBX, the website serving host pages on another origin, and a UDP socket
// standing where the PBX's RTP goes when a test must see the packets. Everything listens on 127.0.0.1.
import { spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { join } from 'node:path';

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` (sync or async) every 50 ms until it is truthy; throws `what` after `timeoutMs`. */
export async function waitUntil(condition, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

function bindUdp(port) {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => resolve(null));
    socket.bind(port, '127.0.0.1', () => resolve(socket));
  });
}

function listenTcp(port) {
  return new Promise((resolve) => {
    const server = createTcpServer();
    server.once('error', () => resolve(null));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

const closeAll = (handles) => Promise.all(handles.map((handle) => new Promise((resolve) => handle.close(resolve))));

/** Whether every port in `ports` can be bound now for UDP (and for TCP when `tcp`). */
async function portsFree(ports, tcp = false) {
  const handles = [];
  let free = true;
  for (const port of ports) {
    const udp = await bindUdp(port);
    const stream = tcp ? await listenTcp(port) : true;
    if (udp) handles.push(udp);
    if (stream && stream !== true) handles.push(stream);
    if (!udp || !stream) {
      free = false;
      break;
    }
  }
  await closeAll(handles);
  return free;
}

// Ports are handed out from a private counter above the kernel's ephemeral range (32768..60999), so one
// run never gives the same port twice and never collides with a connection's own source port.
let nextPort = 20000 + (process.pid % 500) * 16;

/**
 * `count` consecutive ports starting at an even number, free for UDP (and TCP when `tcp`): one port, an
 * RTP/RTCP pair, or a range.
 */
export async function freePorts(count, { tcp = false } = {}) {
  for (let tries = 0; tries < 200; tries += 1) {
    const first = nextPort + (nextPort % 2);
    nextPort = first + count + (count % 2);
    if (nextPort > 32000) nextPort = 20000;
    const ports = Array.from({ length: count }, (_, i) => first + i);
    if (await portsFree(ports, tcp)) return first;
  }
  throw new Error(`no ${count} free ports in a row`);
}

/** Lines of TOML for `{ section: { key: value } }` (strings, numbers and booleans). */
function toml(sections) {
  return Object.entries(sections).map(([section, keys]) => `[${section}]\n${
    Object.entries(keys).map(([key, value]) => `${key} = ${JSON.stringify(value)}`).join('\n')}\n`).join('\n');
}

/** A running `callgate serve` with its own directory, config, database and log. */
export class Gateway {
  /**
   * Writes the config (loopback only, one media worker, no OPTIONS pings, generous per-IP limits so that a
   * run's calls are never rate limited, the demo endpoint on), adds the `pbx` trunk (SIPp at `pbxPort`) and
   * the `site` widget allowing `origins`, starts `serve` and waits for /readyz.
   */
  static async start({ binary, directory, pbxPort, origins }) {
    mkdirSync(directory, { recursive: true });
    const httpPort = await freePorts(1, { tcp: true });
    const sipPort = await freePorts(1, { tcp: true });
    const webrtcPort = await freePorts(1);
    const rtpMin = await freePorts(40);
    const demoPort = await freePorts(1);
    const config = join(directory, 'callgate.toml');
    writeFileSync(config, toml({
      http: { listen: `127.0.0.1:${httpPort}` },
      https: { listen: '' },
      sip: { udp_listen: `127.0.0.1:${sipPort}`, tcp_listen: `127.0.0.1:${sipPort}`, options_ping_interval_secs: 0 },
      media: {
        public_ip: '127.0.0.1', bind_ip: '127.0.0.1', webrtc_port: webrtcPort, workers: 1,
        rtp_port_min: rtpMin, rtp_port_max: rtpMin + 39,
      },
      database: { url: `sqlite://${join(directory, 'callgate.db')}` },
      log: { level: 'info,callgate=debug', format: 'text' },
      limits: { per_ip_calls_per_minute: 1000, per_ip_concurrent_calls: 10 },
      demo: { enabled: true, sip_listen: `127.0.0.1:${demoPort}` },
    }));
    const gateway = new Gateway(binary, config, directory, httpPort);
    gateway.cli(['migrate']);
    gateway.cli(['trunk', 'add', 'pbx', '--host', '127.0.0.1', '--port', String(pbxPort), '--transport', 'udp']);
    gateway.cli(['widget', 'add', 'site', '--trunk', 'pbx', '--destination', '100',
      ...origins.flatMap((origin) => ['--origin', origin]), '--max-per-minute', '1000']);
    await gateway.serve();
    return gateway;
  }

  constructor(binary, config, directory, httpPort) {
    this.binary = binary;
    this.config = config;
    this.logPath = join(directory, 'callgate.log');
    this.origin = `http://127.0.0.1:${httpPort}`;
    this.child = null;
  }

  /** Runs `callgate --config CONFIG ARGS…` to completion and returns its stdout; throws on failure. */
  cli(args) {
    const result = spawnSync(this.binary, ['--config', this.config, ...args], { encoding: 'utf8' });
    if (result.status !== 0) {
      throw new Error(`callgate ${args.join(' ')} exited ${result.status}: ${result.stderr}${result.error || ''}`);
    }
    return result.stdout;
  }

  /** A widget's public id, from `callgate widget show NAME --json`. */
  widgetId(name) {
    return JSON.parse(this.cli(['widget', 'show', name, '--json'])).public_id;
  }

  async serve() {
    const log = createWriteStream(this.logPath);
    this.child = spawn(this.binary, ['--config', this.config, 'serve'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr.pipe(log);
    this.exit = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    let exited = null;
    this.exit.then((status) => { exited = status; });
    await waitUntil(async () => {
      if (exited) throw new Error(`callgate serve exited (${JSON.stringify(exited)}):\n${this.logText()}`);
      try {
        return (await fetch(`${this.origin}/readyz`)).status === 200;
      } catch {
        return false;
      }
    }, 'callgate serve to be ready', 30000);
  }

  /** The log so far. */
  logText() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit status. */
  async stop() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return this.exit;
    this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    const status = await this.exit;
    clearTimeout(killer);
    return status;
  }
}

/** One `sipp` process running a uas scenario on 127.0.0.1 with its traces in its own directory. */
export class Sipp {
  /**
   * Starts `scenario` (a path) listening for SIP on UDP `port`, with `-d pause` ms, `-rtp_echo` when
   * `rtpEcho`, and `-key NAME VALUE` for each of `keys`; resolves once its SIP socket is bound.
   */
  static async start({ scenario, port, directory, rtpEcho = false, pause = 500, keys = {} }) {
    mkdirSync(directory, { recursive: true });
    const mediaPort = await freePorts(4);
    const args = [
      '-sf', scenario, '-i', '127.0.0.1', '-mi', '127.0.0.1', '-p', String(port), '-mp', String(mediaPort),
      '-t', 'u1', '-m', '1', '-d', String(pause), '-recv_timeout', '20000', '-trace_msg', '-trace_err',
      '-nostdin', ...(rtpEcho ? ['-rtp_echo'] : []),
      ...Object.entries(keys).flatMap(([name, value]) => ['-key', name, String(value)]),
    ];
    const sipp = new Sipp(scenario, directory);
    sipp.child = spawn('sipp', args, { cwd: directory, stdio: ['ignore', 'ignore', 'pipe'] });
    sipp.child.stderr.on('data', (chunk) => { sipp.stderr += chunk; });
    sipp.exit = new Promise((resolve) => sipp.child.once('exit', (code, signal) => resolve({ code, signal })));
    sipp.child.once('error', (error) => { sipp.stderr += `${error}\n`; });
    await waitUntil(async () => {
      if (sipp.child.exitCode !== null) throw new Error(`sipp exited at start:\n${sipp.traces()}`);
      return !(await portsFree([port]));
    }, `sipp to bind 127.0.0.1:${port}`);
    return sipp;
  }

  constructor(scenario, directory) {
    this.scenario = scenario;
    this.directory = directory;
    this.stderr = '';
    this.child = null;
  }

  /** Resolves with SIPp's exit code (0: every call of the scenario went as written); kills it after `ms`. */
  async finished(ms = 15000) {
    const timer = setTimeout(() => this.child.kill('SIGKILL'), ms);
    const { code, signal } = await this.exit;
    clearTimeout(timer);
    return signal ? `killed by ${signal} after ${ms} ms` : code;
  }

  /** Kills SIPp if it still runs. */
  async kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exit;
  }

  /** stderr and the message and error traces SIPp wrote. */
  traces() {
    let text = `--- sipp ${this.scenario} (${this.directory}) ---\n[stderr]\n${this.stderr}\n`;
    for (const file of readdirSync(this.directory).filter((name) => name.endsWith('.log')).sort()) {
      text += `[${file}]\n${readFileSync(join(this.directory, file), 'utf8')}\n`;
    }
    return text;
  }
}

/**
 * The website: `GET /?widget=ID&gateway=ORIGIN[&label=TEXT]` is a host page embedding that widget from that
 * gateway, as a website owner pastes it. Listens on 127.0.0.1; reached as http://localhost:PORT it is one
 * origin, as http://127.0.0.1:PORT another.
 */
export async function startSite() {
  const server = createServer((request, response) => {
    const url = new URL(request.url, 'http://site');
    const clean = (name, pattern) => (url.searchParams.get(name) || '').replace(pattern, '');
    const widget = clean('widget', /[^A-Za-z0-9_-]/g);
    const gateway = clean('gateway', /[^A-Za-z0-9:/._-]/g);
    const label = clean('label', /[^A-Za-z ]/g);
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<style>body { font: 16px/1.5 Georgia, serif; margin: 2rem; background: #fafaf5; }</style></head>
<body>
  <h1>A shop</h1>
  <p>Questions? Call us with the button in the corner.</p>
  <script src="${gateway}/widget.js" data-widget="${widget}"${label ? ` data-label="${label}"` : ''} async></script>
</body></html>`);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    allowedOrigin: `http://localhost:${port}`,
    otherOrigin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** One RTP packet's header fields and payload (RFC 3550 §5.1), or null when `bytes` is not RTP. */
export function parseRtp(bytes) {
  if (bytes.length < 12 || bytes[0] >> 6 !== 2) return null;
  const csrcCount = bytes[0] & 0x0f;
  const extension = (bytes[0] & 0x10) !== 0;
  let offset = 12 + 4 * csrcCount;
  if (extension) {
    if (bytes.length < offset + 4) return null;
    offset += 4 + 4 * bytes.readUInt16BE(offset + 2);
  }
  if (bytes.length < offset) return null;
  return {
    marker: (bytes[1] & 0x80) !== 0,
    payloadType: bytes[1] & 0x7f,
    sequence: bytes.readUInt16BE(2),
    timestamp: bytes.readUInt32BE(4),
    ssrc: bytes.readUInt32BE(8),
    payload: bytes.subarray(offset),
  };
}

/** Collects the RTP packets sent to a UDP port of ours (where the PBX's SDP points the gateway). */
export async function listenRtp() {
  const port = await freePorts(2);
  const socket = createSocket('udp4');
  const packets = [];
  socket.on('message', (bytes) => {
    const packet = parseRtp(bytes);
    if (packet) packets.push(packet);
  });
  await new Promise((resolve) => socket.bind(port, '127.0.0.1', resolve));
  return { port, packets, close: () => new Promise((resolve) => socket.close(resolve)) };
}

const DTMF_DIGITS = '0123456789*#';

/**
 * The digits the RFC 4733 telephone-event packets among `packets` carry, in order, one per event: the
 * packets of one event share its RTP timestamp (its start), and the end packet is sent three times.
 * `payloadType` is the negotiated telephone-event type.
 */
export function dtmfDigits(packets, payloadType) {
  const digits = [];
  const seen = new Set();
  for (const packet of packets) {
    if (packet.payloadType !== payloadType || packet.payload.length < 4) continue;
    const key = `${packet.ssrc}/${packet.timestamp}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const event = packet.payload[0];
    digits.push(event < DTMF_DIGITS.length ? DTMF_DIGITS[event] : `event ${event}`);
  }
  return digits.join('');
}
