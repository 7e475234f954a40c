// Baseline relay for the signaling benchmark: the same v1 JSON routing as sotto-server
// (challenge, register/login, send -> stored + envelope push, ack, ping), written with `ws`.
// Deliberately lighter than sotto-server: no signature verification, no persistence,
// no limits. Usage: node relay.mjs [port]   (prints "listening on ADDR").
import { WebSocketServer } from 'ws';
import crypto from 'node:crypto';

const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2] || 0), maxPayload: 65536 });
const online = new Map();
const queues = new Map();
let nextId = 1;

wss.on('listening', () => console.log(`listening on 127.0.0.1:${wss.address().port}`));
wss.on('connection', (ws) => {
  let me = null;
  let meUser = null;
  let meDevice = 0;
  ws.send(JSON.stringify({ v: 1, type: 'challenge', server: 'bench', nonce: crypto.randomBytes(32).toString('base64') }));
  ws.on('message', (data) => {
    let m;
    try { m = JSON.parse(data); } catch { ws.send(JSON.stringify({ v: 1, type: 'error', id: null, code: 'malformed', message: '' })); return; }
    switch (m.type) {
      case 'register':
      case 'login': {
        me = `${m.username}.${m.device_id}`; meUser = m.username; meDevice = m.device_id;
        online.set(me, ws);
        ws.send(JSON.stringify({ v: 1, type: 'authenticated', id: m.id, created: true, one_time_prekeys: 0 }));
        const q = queues.get(me);
        if (q) for (const e of q.values()) ws.send(JSON.stringify(e));
        break;
      }
      case 'send': {
        if (!me) return;
        const id = nextId++;
        const to = `${m.to_user}.${m.to_device}`;
        const now = Date.now();
        const env = { v: 1, type: 'envelope', envelope_id: id, from_user: meUser, from_device: meDevice,
          stored_at_ms: now, expires_at_ms: now + m.ttl_secs * 1000, ciphertext: m.ciphertext };
        let q = queues.get(to);
        if (!q) { q = new Map(); queues.set(to, q); }
        q.set(id, env);
        ws.send(JSON.stringify({ v: 1, type: 'stored', id: m.id, envelope_id: id }));
        const r = online.get(to);
        if (r) r.send(JSON.stringify(env));
        break;
      }
      case 'ack':
        queues.get(me)?.delete(m.envelope_id);
        ws.send(JSON.stringify({ v: 1, type: 'acked', id: m.id }));
        break;
      case 'ping':
        ws.send(JSON.stringify({ v: 1, type: 'pong', id: m.id }));
        break;
      default:
        ws.send(JSON.stringify({ v: 1, type: 'error', id: m.id ?? null, code: 'malformed', message: '' }));
    }
  });
  ws.on('close', () => { if (me && online.get(me) === ws) online.delete(me); });
});
