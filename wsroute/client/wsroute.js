// wsroute.js: a dependency-free browser client for wsroute nodes, speaking
// the wsroute.v1 protocol (docs/wsroute-protocol.md). It keeps the position
// (epoch and offset) of every stream it follows, reconnects with capped
// exponential backoff and jitter, and presents its positions on reconnecting
// (to any node) so that the node sends what it missed, marked recovered.
//
// It is an ES module: <script type="module">import { WsrouteClient } from
// '/wsroute.js'</script>. A module adds no global name, runs in strict mode,
// and loads deferred; every browser that has WebSocket subprotocols and
// sessionStorage has had modules since 2018. wsroute.ClientScript() serves
// it. The node must speak wsroute.v1 (wsroute's Handler does): a browser
// fails a connection whose server ignores the subprotocol it asked for.
//
//	const client = new WsrouteClient('/ws?client=alice', {
//	  storage: sessionStorage,                  // a reload recovers too
//	  storageKey: 'wsroute:alice',
//	  onMessage: (m) => show(m.stream, m.data, m.recovered),
//	  onPosition: (p) => p.recovered === false && warn(p.stream, p.reason),
//	  onState: (state, info) => showState(state, info),
//	});
//	client.connect();

export const SUBPROTOCOL = 'wsroute.v1';

// The node's bounds on the recover parameter: at most 64 streams and 8 KiB.
const MAX_STREAMS = 64;
const MAX_RECOVER_BYTES = 8 << 10;
const MAX_EPOCH = 64;

// Close codes this client uses (4000-4999 are the application's).
export const CLOSE_DROPPED = 4000; // drop(): the application cut the connection
export const CLOSE_GAP = 4001; //     an offset was skipped: reconnect to recover it
export const CLOSE_SILENT = 4002; //  no ping frame from the node for too long

export class WsrouteClient {
  // url is the node's WebSocket endpoint, absolute (ws:, wss:, http:, https:)
  // or relative to the page, with the application's query parameters.
  // Options, all optional:
  //   onMessage(m)         m: {stream, data, epoch, offset, recovered, sentAt}.
  //                        data is a string, or a Uint8Array for a payload
  //                        that is not UTF-8. epoch, offset and sentAt are
  //                        undefined for a message not kept in a history.
  //   onPosition(p)        p: {stream, epoch, offset, recovered, reason,
  //                        replayed}: a stream is live from here. recovered
  //                        is undefined (no position was presented), true
  //                        (replayed messages were sent) or false (reason:
  //                        "epoch", "trimmed" or "ahead": they are lost).
  //   onState(state, info) state: "connecting", "open", "waiting" (info.delay
  //                        and info.until say until when; info.code and
  //                        info.reason why) or "closed".
  //   storage, storageKey  a Storage (sessionStorage) to keep positions in,
  //                        so that a new page of the same tab recovers too.
  //                        Use a key per client ID: positions are a client's.
  //   minDelay, maxDelay   backoff bounds in ms (500, 15000).
  //   stableAfter          ms a connection must last for the backoff to
  //                        start again from minDelay (5000): a node that
  //                        accepts and closes at once is not hammered.
  constructor(url, options = {}) {
    this.url = url;
    this.options = {minDelay: 500, maxDelay: 15000, stableAfter: 5000, storageKey: 'wsroute.positions', ...options};
    this.state = 'idle';
    this.positions = new Map(); // stream -> {epoch, offset, at}; at orders them for the bounds
    this.tick = 0; //              the last at given
    this.ws = null; //             the current socket; events of any other are stale
    this.attempt = 0; //           failed attempts since the last stable connection
    this.timer = 0;
    this.saving = false; //        a save is scheduled
    this.closed = true;
    this.dropped = false; //       waiting out a drop(), which coming online does not cut short
    this.omitted = new Set(); //   streams with a position left out of the last recover
    this.pingInterval = 0; //      ms between the node's ping frames, once it said
    this.watchdog = 0; //          closes a connection silent for too long
    this.online = () => { if (this.state === 'waiting' && !this.dropped) this.reopenNow(); };
    this.pagehide = () => this.save(); // a save scheduled may not run before the page goes
    this.load();
  }

  // connect opens the connection, and keeps it open until close().
  connect() {
    if (!this.closed) return this;
    this.closed = false;
    // Back online: no need to wait out the backoff.
    globalThis.addEventListener?.('online', this.online);
    globalThis.addEventListener?.('pagehide', this.pagehide);
    this.reopenNow();
    return this;
  }

  // send writes data (a string, ArrayBuffer, Blob or typed array) to the
  // node. It returns false, sending nothing, when not connected: the
  // application decides whether to queue or tell the user.
  send(data) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(data);
    return true;
  }

  // drop cuts the connection as a network failure would, stays down for
  // downFor ms, then reconnects, to options.url if given (another node),
  // presenting its positions. For demos and tests.
  drop(downFor = 0, {url} = {}) {
    if (this.closed) return;
    if (url) this.url = url;
    this.stop(CLOSE_DROPPED, 'dropped by the application');
    this.wait(downFor, {code: CLOSE_DROPPED, reason: 'dropped'});
    this.dropped = true;
  }

  // close closes the connection for good; positions stay in storage.
  close() {
    this.closed = true;
    globalThis.removeEventListener?.('online', this.online);
    globalThis.removeEventListener?.('pagehide', this.pagehide);
    this.stop(1000, 'closed');
    this.save();
    this.setState('closed', {});
  }

  // forget drops the position of a stream the application no longer
  // follows (a room it left), so that it is not presented again.
  forget(stream) {
    this.positions.delete(stream);
    this.save();
  }

  // position returns the stored {epoch, offset} of stream, if any.
  position(stream) {
    const p = this.positions.get(stream);
    return p && {epoch: p.epoch, offset: p.offset};
  }

  // open dials the node with the subprotocol and the recover parameter.
  open() {
    const url = new URL(this.url, globalThis.location?.href);
    url.protocol = url.protocol.replace(/^http/, 'ws');
    const recover = this.recoverParam();
    if (recover) url.searchParams.set('recover', recover);
    else url.searchParams.delete('recover');

    const ws = new WebSocket(url.href, SUBPROTOCOL);
    this.ws = ws;
    let openedAt = 0;
    this.setState('connecting', {url: url.href});
    ws.onopen = () => {
      if (this.ws !== ws) return;
      openedAt = Date.now();
      this.setState('open', {url: url.href});
    };
    ws.onmessage = (e) => { if (this.ws === ws) this.receive(ws, e.data); };
    ws.onclose = (e) => {
      if (this.ws !== ws) return; // replaced or stopped on purpose
      this.ws = null;
      clearTimeout(this.watchdog);
      if (openedAt && Date.now() - openedAt >= this.options.stableAfter) this.attempt = 0;
      // Refused for too many connections or too many frames: coming back
      // at once would be refused again.
      if (e.code === 4409 || e.code === 4429) this.attempt = Math.max(this.attempt, 4);
      this.retry({code: e.code, reason: e.reason});
    };
  }

  // retry waits a backoff delay, then reconnects. The ceiling doubles with
  // each failed attempt up to maxDelay; the delay is between half the
  // ceiling and the ceiling ("equal jitter"), so that the clients of a
  // node that restarted do not all come back at the same moment.
  retry(info) {
    const {minDelay, maxDelay} = this.options;
    const ceiling = Math.min(maxDelay, minDelay * 2 ** this.attempt);
    this.attempt++;
    this.wait(ceiling / 2 + Math.random() * ceiling / 2, info);
  }

  wait(delay, info) {
    clearTimeout(this.timer);
    this.dropped = false;
    this.setState('waiting', {...info, delay, until: Date.now() + delay, attempt: this.attempt});
    this.timer = setTimeout(() => this.reopenNow(), delay);
  }

  reopenNow() {
    clearTimeout(this.timer);
    this.stop(1000, 'reconnecting');
    this.open();
  }

  // watch notes that ws is alive: the node sends a ping frame every
  // interval ms (it says how often), so a connection silent for two of
  // them and a margin has lost its path (a phone that changed networks, a
  // load balancer that dropped it) though the browser still calls it open:
  // close it and reconnect, as the node has by then.
  watch(ws, interval) {
    if (Number.isFinite(interval) && interval > 0) this.pingInterval = interval;
    clearTimeout(this.watchdog);
    if (!this.pingInterval || this.ws !== ws) return;
    this.watchdog = setTimeout(() => {
      if (this.ws !== ws) return;
      this.ws = null;
      ws.close(CLOSE_SILENT, 'no ping from the node');
      this.retry({code: CLOSE_SILENT, reason: 'no ping from the node'});
    }, 2 * this.pingInterval + 5000);
  }

  // stop closes the current socket, if any, without reconnecting: its
  // events are stale from now on.
  stop(code, reason) {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    if (!ws) return;
    // Closing a socket still connecting makes the browser log an error:
    // let it open, then close it.
    if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close(code, reason);
    else ws.close(code, reason);
  }

  receive(ws, raw) {
    let f;
    try {
      f = JSON.parse(raw);
    } catch {
      return; // not from a wsroute.v1 node
    }
    this.watch(ws, f.type === 'ping' ? f.interval : undefined);
    if (f.type === 'message') this.message(ws, f);
    else if (f.type === 'position') this.positionFrame(f);
    else if (f.type === 'left') this.leftFrame(f);
  }

  message(ws, f) {
    const kept = typeof f.stream === 'string' && typeof f.offset === 'number';
    if (kept) {
      const last = this.positions.get(f.stream);
      // In another epoch the history started again: nothing to compare.
      if (last && last.epoch === f.epoch) {
        if (f.offset <= last.offset) return; // had it already
        if (f.offset > last.offset + 1) { // missed some: get them from the history
          this.ws = null;
          ws.close(CLOSE_GAP, 'offset gap');
          this.retry({code: CLOSE_GAP, reason: `${f.stream}: offset ${f.offset} after ${last.offset}`});
          return;
        }
      }
      this.store(f.stream, f.epoch, f.offset);
    }
    this.emit('onMessage', {
      stream: f.stream ?? null,
      data: f.data_base64 !== undefined ? fromBase64(f.data_base64) : f.data,
      epoch: f.epoch,
      offset: f.offset,
      recovered: f.recovered === true,
      sentAt: f.sent_at,
    });
  }

  positionFrame(f) {
    let {recovered, reason} = f;
    // A stream the client had a position in but left out of recover (the
    // node's bounds): the node starts it afresh, and the client says what
    // that means, never a silent fresh start.
    if (recovered === undefined && this.omitted.has(f.stream)) {
      recovered = false;
      reason = 'not presented';
    }
    this.omitted.delete(f.stream);
    // The node's position wins, whatever the client had: after "epoch" or
    // "ahead" the old one means nothing.
    this.store(f.stream, f.epoch, f.offset);
    this.emit('onPosition', {
      stream: f.stream, epoch: f.epoch, offset: f.offset,
      recovered, reason, replayed: f.replayed ?? 0,
    });
  }

  // left: the node took the connection out of a room; a later join starts
  // afresh, so the room's position must not be presented or compared.
  leftFrame(f) {
    if (typeof f.stream === 'string') this.forget(f.stream);
  }

  store(stream, epoch, offset) {
    this.positions.set(stream, {epoch, offset, at: ++this.tick});
    // One write per task, however many messages the task handled.
    if (!this.saving) {
      this.saving = true;
      setTimeout(() => { this.saving = false; this.save(); }, 0);
    }
  }

  // recoverParam is the JSON of the most recently updated positions that
  // fit the node's bounds; the oldest are left out, and remembered in
  // omitted, so that their fresh start is reported as not recovered.
  recoverParam() {
    const all = [...this.positions].sort((a, b) => b[1].at - a[1].at);
    const newest = all.slice(0, MAX_STREAMS);
    let json = '';
    while (newest.length) {
      const candidate = JSON.stringify(Object.fromEntries(newest.map(([s, p]) => [s, {epoch: p.epoch, offset: p.offset}])));
      if (new TextEncoder().encode(candidate).length <= MAX_RECOVER_BYTES) {
        json = candidate;
        break;
      }
      newest.pop();
    }
    this.omitted = new Set(all.slice(newest.length).map(([stream]) => stream));
    return json;
  }

  load() {
    const {storage, storageKey} = this.options;
    if (!storage) return;
    try {
      const saved = JSON.parse(storage.getItem(storageKey) || '{}');
      for (const [stream, p] of Object.entries(saved)) {
        // A malformed position would make the node refuse the connection.
        if (typeof p?.epoch === 'string' && p.epoch.length >= 1 && p.epoch.length <= MAX_EPOCH &&
            Number.isSafeInteger(p.offset) && p.offset >= 0 && validStream(stream)) {
          const at = Number(p.at) || 0;
          this.positions.set(stream, {epoch: p.epoch, offset: p.offset, at});
          this.tick = Math.max(this.tick, at);
        }
      }
    } catch {
      // unreadable: start without positions
    }
  }

  save() {
    const {storage, storageKey} = this.options;
    if (!storage) return;
    try {
      storage.setItem(storageKey, JSON.stringify(Object.fromEntries(this.positions)));
    } catch {
      // full or forbidden: positions stay in memory
    }
  }

  setState(state, info) {
    this.state = state;
    this.emit('onState', state, info);
  }

  emit(name, ...args) {
    this.options[name]?.(...args);
  }
}

// validStream is the node's rule for a stream name in recover.
function validStream(stream) {
  return stream === 'client' || (stream.startsWith('room:') && stream.length > 5);
}

function fromBase64(s) {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}
