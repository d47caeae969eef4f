/**
 * imclient.js: a small client for the imserver WebSocket protocol (docs/PROTOCOL.md),
 * as a plain browser ES module with no dependency and no build step.
 *
 *     import { IMClient } from '/static/js/imclient.js';
 *     const client = new IMClient({ url: 'ws://host:8089/acc', appID: 101, userID: 'alice' });
 *     client.on('message', ({ room, message }) => console.log(room, message.from, message.msg));
 *     client.connect();
 *     client.join('lobby');
 *     client.publish('lobby', 'hello');
 *
 * What it does: logs in, keeps the connection alive with heartbeats, reconnects with a
 * capped, jittered exponential backoff (not after a refused login or a close 4000,
 * "replaced"), joins named rooms again after each new login, recovers what a room missed
 * meanwhile (join with `since`), drops a pushed message it has already seen, pages
 * history, and holds messages sent while disconnected until the server has taken them.
 * The reference for applications is docs/CLIENT.md.
 */

const DEFAULTS = {
  heartbeatInterval: 30,     // seconds between heartbeats
  requestTimeout: 10000,     // ms to wait for a reply before the socket counts as dead
  connectTimeout: 10000,     // ms to open the socket
  reconnectBase: 1000,       // ms: the first reconnect delay (before jitter)
  reconnectMax: 30000,       // ms: the delay never grows past this
  stableAfter: 10000         // ms: a login that lasts this long resets the backoff
};

/** Close code of a connection replaced by a newer login of the same user. */
export const CLOSE_REPLACED = 4000;

/** Login answers that a retry would only repeat: the client stops instead. */
const FINAL_LOGIN_CODES = new Set([1002, 1003]);

const OK = 200;
const NOT_LOGGED_IN = 1000;

/** Text of a failure that the client, not the server, decided. */
export const NOT_CONNECTED = 'not connected to the server';

/**
 * An error reply of the server (or a request that got none).
 * `code` is the server's code (null when no reply came), `detail` its sentence, if any.
 */
export class IMError extends Error {
  constructor(message, { code = null, codeMsg = '', detail = '', cmd = '', room } = {}) {
    super(message);
    this.name = 'IMError';
    this.code = code;
    this.codeMsg = codeMsg;
    this.detail = detail;
    this.cmd = cmd;
    if (room !== undefined) this.room = room;
  }
}

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  if (globalThis.crypto && globalThis.crypto.getRandomValues) {
    globalThis.crypto.getRandomValues(buf);
  } else {
    for (let i = 0; i < bytes; i++) buf[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(buf, (b) => (0x100 + b).toString(16).slice(1)).join('');
}

/** A fresh msgID: time and 64 random bits, unique enough for the server's 12 h memory. */
export function newMsgID() {
  return Date.now().toString(36) + '-' + randomHex(8);
}

/**
 * One connection to an imserver node, kept up by itself.
 *
 * Events (`client.on(name, fn)` calls fn with the event's detail; the client is also an
 * EventTarget, whose events are CustomEvents with that detail):
 * - `state`: `{state, retryAt, stopped, why, code, reason, detail}`, state being
 *   `connecting`, `online` or `offline`.
 * - `message`: `{room, message, recovered, private}`; `message` is the push's data.
 * - `presence`: `{room, kind: 'enter'|'exit', user}`.
 * - `joined`: `{room, epoch, offset}` after a join that did not recover (a first join).
 * - `recovered`: `{room, count}` after a reconnect, once the missed messages were given.
 * - `recoveryfailed`: `{room, epoch, offset}`: what the room missed cannot be replayed;
 *   reload its history.
 * - `send`: `{msgID, room, msg, type, status, waiting, attempts, code, detail, duplicate,
 *   offset, epoch}`, status `pending`, `sent` or `failed`.
 * - `error`: `{cmd, code, codeMsg, detail, room}` for an error reply of the server.
 */
export class IMClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.url WebSocket URL of the node's /acc endpoint.
   * @param {number} options.appID The app to log in to.
   * @param {string} options.userID The user's ID.
   * @param {string} [options.serviceToken] Login token, when the node wants one.
   * @param {number} [options.heartbeatInterval=30] Seconds between heartbeats.
   * @param {number} [options.requestTimeout=10000] Milliseconds to wait for a reply.
   * @param {number} [options.connectTimeout=10000] Milliseconds to open the socket.
   * @param {number} [options.reconnectBase=1000] First reconnect delay, in ms.
   * @param {number} [options.reconnectMax=30000] Longest reconnect delay, in ms.
   * @param {number} [options.stableAfter=10000] A login lasting this long (ms) resets the backoff.
   * @param {Function} [options.WebSocket] WebSocket constructor (default: the global one).
   */
  constructor(options) {
    super();
    if (!options || !options.url) throw new TypeError('IMClient: options.url is required');
    this.options = Object.assign({}, DEFAULTS, options);
    this.url = String(options.url);
    this.appID = Number(options.appID);
    this.userID = String(options.userID || '');
    this.serviceToken = String(options.serviceToken || '');
    /** `idle` before connect(), then `connecting`, `online` or `offline`. */
    this.state = 'idle';
    /** True once the client has given up (refused login, replaced, close()). */
    this.stopped = false;
    this._ws = null;
    this._online = false;
    this._attempt = 0;
    this._logins = 0;
    this._seq = 0;
    this._lastHeard = 0;
    this._timers = {};
    this._requests = new Map();   // seq -> {resolve, reject, timer, cmd}
    // Rooms this client is in: '' is the app's own room. Each remembers the last epoch and
    // offset seen, and holds live messages while a recovery of it is answered.
    this._rooms = new Map([['', this._newRoom()]]);
    this._outbox = [];            // sends in order: {msgID, room, msg, type, attempts}
    this._sending = null;         // the one on its way
    if (typeof globalThis.addEventListener === 'function') {
      // Back on the network: do not wait for the backoff to run out.
      globalThis.addEventListener('online', () => this.retryNow());
    }
  }

  // ------------------------------------------------------------------ public API

  /**
   * Listen to an event; returns a function that stops listening.
   * @param {string} name Event name (`state`, `message`, `presence`, ...).
   * @param {Function} fn Called with the event's detail.
   * @returns {Function}
   */
  on(name, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  /** Open the connection (again, after the client stopped). */
  connect() {
    this.stopped = false;
    this._clearRetry();
    if (this._ws) return;
    this._open();
  }

  /**
   * Leave for good: closes the socket, does not reconnect; sends still waiting fail.
   * connect() starts again.
   */
  close() {
    this._stop('closed', {});
  }

  /** When a reconnect is waiting for its delay, try at once. */
  retryNow() {
    if (!this._ws && this._timers.retry && !this.stopped) {
      this._clearRetry();
      this._open();
    }
  }

  /**
   * Log in as another user (or with a new token): the current connection is closed and a
   * new one logs in at once. Rooms, positions and waiting sends are kept.
   * @param {{userID: string, serviceToken?: string}} user
   */
  setUser({ userID, serviceToken = '' }) {
    this.userID = String(userID);
    this.serviceToken = String(serviceToken || '');
    this._attempt = 0;
    const ws = this._ws;
    if (ws) {
      this._ws = null;
      try { ws.close(1000, 'new login'); } catch (err) { /* closed already */ }
      this._cleanUp();
    }
    this.connect();
  }

  /** Named rooms joined (or to be joined at the next login). @returns {string[]} */
  get rooms() {
    return Array.from(this._rooms.keys()).filter((name) => name !== '');
  }

  /**
   * The last place seen in a room's stream.
   * @param {string} room
   * @returns {{epoch: string, offset: number}|null}
   */
  position(room) {
    const r = this._rooms.get(room);
    return r && r.epoch ? { epoch: r.epoch, offset: r.offset } : null;
  }

  /**
   * Join a named room, now or at the next login, and again after every reconnect.
   * Resolves with the join reply's data once joined; rejects with an IMError when refused.
   * @param {string} room
   * @returns {Promise<object>}
   */
  join(room) {
    room = String(room);
    let r = this._rooms.get(room);
    if (!r) {
      r = this._newRoom();
      this._rooms.set(room, r);
    }
    if (r.joined) return Promise.resolve({ room, epoch: r.epoch, offset: r.offset, recovered: false,
      publications: [] });
    const promise = new Promise((resolve, reject) => r.waiters.push({ resolve, reject }));
    if (this._online && !r.joining && room !== '') this._join(room).then(() => this._pump());
    return promise;
  }

  /**
   * Leave a named room: no more messages from it, and no re-join.
   * @param {string} room
   * @returns {Promise<void>}
   */
  leave(room) {
    room = String(room);
    const r = this._rooms.get(room);
    if (room === '' || !r) return Promise.resolve();
    this._rooms.delete(room);
    r.waiters.splice(0).forEach((w) => w.reject(new IMError('left ' + room, { room })));
    if (!this._online) return Promise.resolve();
    return this._request('leave', { room }).then((response) => {
      if (response.code !== OK && response.code !== 1001) throw this._failed('leave', response, room);
    });
  }

  /**
   * Read a room's history: the newest `limit` kept messages below `before`, oldest first.
   * Rejects with an IMError when not online or refused.
   * @param {string} room '' for the app's own room.
   * @param {{before?: number, limit?: number}} [page]
   * @returns {Promise<{room: string, epoch: string, offset: number, publications: object[]}>}
   */
  history(room, { before, limit } = {}) {
    if (!this._online) return Promise.reject(new IMError(NOT_CONNECTED, { cmd: 'history', room }));
    const data = { room: String(room) };
    if (before !== undefined && before !== null) data.before = before;
    if (limit !== undefined && limit !== null) data.limit = limit;
    return this._request('history', data).then((response) => {
      if (response.code !== OK) throw this._failed('history', response, room);
      const reply = response.data || {};
      return {
        room: String(room),
        epoch: typeof reply.epoch === 'string' ? reply.epoch : '',
        offset: Number(reply.offset) || 0,
        publications: Array.isArray(reply.publications) ? reply.publications : []
      };
    });
  }

  /**
   * Send a message to a room ('' is the app's own room). It waits while the client is not
   * logged in and goes out after the next login, in the order sent, with its msgID. What
   * becomes of it arrives as `send` events with this msgID.
   * @param {string} room
   * @param {string} msg
   * @param {{type?: string, msgID?: string}} [options]
   * @returns {{msgID: string, room: string, msg: string, type: string, status: string}}
   */
  publish(room, msg, { type = 'text', msgID = newMsgID() } = {}) {
    const entry = { msgID, room: String(room), msg: String(msg), type, attempts: 0 };
    const copy = { msgID, room: entry.room, msg: entry.msg, type, status: 'pending' };
    if (this.stopped) {
      queueMicrotask(() => this._sendStatus(entry, 'failed', { detail: NOT_CONNECTED }));
    } else {
      this._outbox.push(entry);
      queueMicrotask(() => this._pump());
    }
    return copy;
  }

  /** Sends not yet taken by the server, oldest first. @returns {object[]} */
  get pending() {
    return this._outbox.map((e) => ({ msgID: e.msgID, room: e.room, msg: e.msg, type: e.type,
      attempts: e.attempts, waiting: e !== this._sending }));
  }

  // ------------------------------------------------------------------ connection

  _newRoom() {
    return { epoch: '', offset: 0, joining: false, joined: false, held: null, waiters: [] };
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _setState(state, extra) {
    this.state = state;
    this._emit('state', Object.assign({ state, retryAt: null, stopped: this.stopped }, extra));
  }

  _clearRetry() {
    clearTimeout(this._timers.retry);
    this._timers.retry = null;
  }

  _open() {
    this._setState('connecting', { attempt: this._attempt });
    const Impl = this.options.WebSocket || globalThis.WebSocket;
    let ws;
    try {
      ws = new Impl(this.url);
    } catch (err) {
      this._afterClose({ why: 'error', detail: String(err && err.message || err) });
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._timers.connect = setTimeout(() => {
      if (this._ws === ws && !this._lastHeard) this._drop('the server did not answer');
    }, this.options.connectTimeout);
    this._lastHeard = 0;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      clearTimeout(this._timers.connect);
      this._lastHeard = Date.now();
      this._login();
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._lastHeard = Date.now();
      let raw = event.data;
      if (typeof raw !== 'string') raw = new TextDecoder('utf-8').decode(raw);
      this._frame(raw);
    };
    ws.onerror = () => { /* the close event follows */ };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._closed(event.code, event.reason || '');
    };
  }

  _login() {
    const data = { serviceToken: this.serviceToken, appID: this.appID, userID: this.userID };
    this._request('login', data).then((response) => {
      if (response.code === OK) {
        this._loggedIn();
      } else if (FINAL_LOGIN_CODES.has(response.code)) {
        this._stop('refused', this._codeOf(response));
      } else {
        this._drop('login refused', Object.assign({ why: 'login' }, this._codeOf(response)));
      }
    }, () => { /* the socket went: its close is handled */ });
  }

  _loggedIn() {
    this._online = true;
    this._logins += 1;
    this._setState('online', { logins: this._logins });
    clearTimeout(this._timers.stable);
    this._timers.stable = setTimeout(() => { this._attempt = 0; }, this.options.stableAfter);
    this._startHeartbeat();
    // Rooms first (a named room takes messages only once joined), then what waits to go.
    const joins = Array.from(this._rooms.keys()).map((room) => this._join(room));
    Promise.all(joins).then(() => this._pump());
  }

  _startHeartbeat() {
    clearInterval(this._timers.heartbeat);
    const every = this.options.heartbeatInterval * 1000;
    this._timers.heartbeat = setInterval(() => {
      if (!this._online) return;
      // Nothing heard for two rounds: the socket is dead even if it looks open.
      if (Date.now() - this._lastHeard > 2 * every + this.options.requestTimeout) {
        this._drop('no answer from the server');
        return;
      }
      this._request('heartbeat', {}).then((response) => {
        if (response.code === NOT_LOGGED_IN && this._online) {
          // The server forgot this login (e.g. swept it): log in again on this socket.
          this._online = false;
          this._login();
        }
      }, () => {});
    }, every);
  }

  /** Close the socket ourselves and reconnect after the backoff. */
  _drop(why, extra = {}) {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    try { ws.close(1000, 'reconnect'); } catch (err) { /* closed already */ }
    this._afterClose(Object.assign({ why: 'error', reason: why || '' }, extra));
  }

  _closed(code, reason) {
    if (code === CLOSE_REPLACED || /logged in elsewhere|replaced/i.test(reason)) {
      this._stop('replaced', { code, reason });
      return;
    }
    this._afterClose({ why: 'closed', code, reason });
  }

  /** Give up: no reconnect; sends that wait fail. */
  _stop(why, extra) {
    this.stopped = true;
    this._clearRetry();
    const ws = this._ws;
    this._ws = null;
    this._cleanUp();
    if (ws) {
      try { ws.close(1000, 'bye'); } catch (err) { /* closed already */ }
    }
    this._setState('offline', Object.assign({ why }, extra));
    const failed = this._outbox.splice(0);
    this._sending = null;
    failed.forEach((entry) => this._sendStatus(entry, 'failed', { detail: NOT_CONNECTED }));
  }

  _afterClose(extra) {
    this._cleanUp();
    if (this.stopped) return;
    const base = Math.min(this.options.reconnectMax, this.options.reconnectBase * 2 ** this._attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    this._attempt += 1;
    this._clearRetry();
    this._timers.retry = setTimeout(() => {
      this._timers.retry = null;
      this._open();
    }, delay);
    this._setState('offline', Object.assign({ retryAt: Date.now() + delay }, extra));
    // Sends now wait for the next login: say so.
    this._outbox.forEach((entry) => this._sendStatus(entry, 'pending'));
  }

  _cleanUp() {
    clearTimeout(this._timers.connect);
    clearTimeout(this._timers.stable);
    clearInterval(this._timers.heartbeat);
    this._online = false;
    this._sending = null;
    const requests = Array.from(this._requests.values());
    this._requests.clear();
    requests.forEach((req) => {
      clearTimeout(req.timer);
      req.reject(new IMError('connection closed', { cmd: req.cmd }));
    });
    this._rooms.forEach((r) => {
      r.joining = false;
      r.joined = false;
      if (r.held) this._release(r);
    });
  }

  _codeOf(response) {
    return { code: response.code, codeMsg: response.codeMsg || '',
      detail: typeof response.detail === 'string' ? response.detail : '' };
  }

  /** Sends a request; resolves with the reply's `response` object. */
  _request(cmd, data) {
    return new Promise((resolve, reject) => {
      const ws = this._ws;
      if (!ws || ws.readyState !== 1) {
        reject(new IMError(NOT_CONNECTED, { cmd }));
        return;
      }
      this._seq += 1;
      const seq = Date.now() + '-' + this._seq + '-' + randomHex(3);
      const req = { resolve, reject, cmd, timer: null };
      req.timer = setTimeout(() => {
        this._requests.delete(seq);
        reject(new IMError('no answer to ' + cmd, { cmd }));
        if (this._ws === ws) this._drop('no answer to ' + cmd);
      }, this.options.requestTimeout);
      this._requests.set(seq, req);
      try {
        ws.send(JSON.stringify({ seq, cmd, data }));
      } catch (err) {
        clearTimeout(req.timer);
        this._requests.delete(seq);
        reject(new IMError(String(err && err.message || err), { cmd }));
      }
    });
  }

  _failed(cmd, response, room) {
    const info = Object.assign({ cmd, room }, this._codeOf(response));
    this._emit('error', info);
    return new IMError(info.detail || info.codeMsg || 'error ' + info.code, info);
  }

  // ------------------------------------------------------------------ frames

  _frame(raw) {
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch (err) {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    const response = frame.response && typeof frame.response === 'object' ? frame.response : {};
    const req = typeof frame.seq === 'string' ? this._requests.get(frame.seq) : undefined;
    if (req && req.cmd === frame.cmd) {
      this._requests.delete(frame.seq);
      clearTimeout(req.timer);
      req.resolve(response);
      return;
    }
    const data = response.data && typeof response.data === 'object' ? response.data : {};
    const room = typeof data.room === 'string' ? data.room : '';
    if (frame.cmd === 'msg') {
      this._message(room, data);
    } else if ((frame.cmd === 'enter' || frame.cmd === 'exit') && data.from) {
      this._emit('presence', { room, kind: frame.cmd, user: String(data.from) });
    } else if (response.code !== undefined && response.code !== OK) {
      this._emit('error', Object.assign({ cmd: frame.cmd || '' }, this._codeOf(response)));
    }
  }

  /** A live message: held while its room's recovery is answered, else given now. */
  _message(room, data) {
    const r = this._rooms.get(room);
    if (r && r.held && !data.target) {
      r.held.push(data);
      return;
    }
    this._deliver(room, data, false);
  }

  /** Give a message to the app unless its room's position says it was seen already. */
  _deliver(room, data, recovered) {
    const isPrivate = Boolean(data.target);   // an inbox message: its offset is the inbox's
    const r = isPrivate ? null : this._rooms.get(room);
    if (r && typeof data.offset === 'number' && typeof data.epoch === 'string' && data.epoch) {
      if (data.epoch === r.epoch && data.offset <= r.offset) return false;
      r.epoch = data.epoch;
      r.offset = data.offset;
    }
    this._emit('message', { room, message: data, recovered, private: isPrivate });
    return true;
  }

  _release(r) {
    const held = r.held;
    r.held = null;
    return held;
  }

  // ------------------------------------------------------------------ rooms

  /** (Re-)join one room after a login, recovering from its last position when known. */
  _join(room) {
    const r = this._rooms.get(room);
    if (!r) return Promise.resolve();
    const data = { room };
    const since = r.epoch ? { epoch: r.epoch, offset: r.offset } : null;
    if (since) data.since = since;
    r.joining = true;
    r.held = since ? [] : null;
    return this._request('join', data).then((response) => {
      if (this._rooms.get(room) !== r) return;   // left meanwhile
      r.joining = false;
      const held = this._release(r) || [];
      if (response.code !== OK) {
        held.forEach((m) => this._deliver(room, m, false));
        const err = this._failed('join', response, room);
        if (room === '') return;   // an older node without rooms: the app room still works
        if (response.code !== NOT_LOGGED_IN) this._rooms.delete(room);   // not tried again
        r.waiters.splice(0).forEach((w) => w.reject(err));
        return;
      }
      const reply = response.data || {};
      r.joined = true;
      const epoch = typeof reply.epoch === 'string' ? reply.epoch : '';
      const top = Number(reply.offset) || 0;
      if (since && reply.recovered === true) {
        let count = 0;
        (Array.isArray(reply.publications) ? reply.publications : []).forEach((p) => {
          if (p && typeof p === 'object' && this._deliver(room, p, true)) count += 1;
        });
        this._moveTo(r, epoch, top);
        held.forEach((m) => this._deliver(room, m, false));
        this._emit('recovered', { room, count });
      } else {
        // No replay: the position starts again at the top; live ones follow it.
        r.epoch = epoch;
        r.offset = top;
        held.forEach((m) => this._deliver(room, m, false));
        if (since) this._emit('recoveryfailed', { room, epoch, offset: top });
        else this._emit('joined', { room, epoch, offset: top });
      }
      r.waiters.splice(0).forEach((w) => w.resolve(reply));
    }, () => {
      r.joining = false;   // the socket went; the next login joins again
    });
  }

  _moveTo(r, epoch, top) {
    if (epoch && epoch === r.epoch) r.offset = Math.max(r.offset, top);
    else if (epoch) {
      r.epoch = epoch;
      r.offset = top;
    }
  }

  // ------------------------------------------------------------------ sending

  _sendStatus(entry, status, extra = {}) {
    this._emit('send', Object.assign({
      msgID: entry.msgID, room: entry.room, msg: entry.msg, type: entry.type, status,
      waiting: status === 'pending' && entry !== this._sending, attempts: entry.attempts
    }, extra));
  }

  /** Sends the oldest waiting message when logged in and none is on its way. */
  _pump() {
    if (this._sending || !this._online || !this._outbox.length) return;
    const entry = this._outbox[0];
    if (entry.room !== '' && this._rooms.has(entry.room) && this._rooms.get(entry.room).joining) return;
    this._sending = entry;
    entry.attempts += 1;
    this._sendStatus(entry, 'pending');
    const data = { room: entry.room, msg: entry.msg, type: entry.type, msgID: entry.msgID };
    this._request('publish', data).then((response) => {
      if (this._sending !== entry) return;
      this._sending = null;
      if (response.code === NOT_LOGGED_IN) {
        // The server forgot this login: log in again; the new login sends it.
        this._online = false;
        this._login();
        return;
      }
      this._outbox.shift();
      if (response.code === OK) {
        const reply = response.data || {};
        this._sendStatus(entry, 'sent', { duplicate: reply.duplicate === true,
          offset: reply.offset, epoch: reply.epoch });
      } else {
        this._sendStatus(entry, 'failed', this._codeOf(this._failed('publish', response, entry.room)));
      }
      this._pump();
    }, () => {
      // No answer (the socket went): it may or may not have been taken. It goes again
      // after the next login with the same msgID, which the server takes once.
      if (this._sending === entry) this._sending = null;
    });
  }
}
