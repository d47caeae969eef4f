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
 * What it does: logs in (as a device: `deviceID`, kept in localStorage), keeps the
 * connection alive with heartbeats, reconnects with a capped, jittered exponential backoff
 * (not after a refused login or a close 4000, "replaced"), joins named rooms again after
 * each new login, recovers what a room missed meanwhile (join with `since`), drops a pushed
 * message it has already seen, pages history (of rooms and of the user's inbox), holds
 * messages (room and private ones) sent while disconnected until the server has taken
 * them, gives the private messages that waited in the inbox at login, acknowledges what
 * the application has shown (`ack`), and uploads images.
 * The reference for applications is docs/CLIENT.md.
 */

const DEFAULTS = {
  heartbeatInterval: 30,     // seconds between heartbeats
  requestTimeout: 10000,     // ms to wait for a reply before the socket counts as dead
  connectTimeout: 10000,     // ms to open the socket
  reconnectBase: 1000,       // ms: the first reconnect delay (before jitter)
  reconnectMax: 30000,       // ms: the delay never grows past this
  stableAfter: 10000,        // ms: a login that lasts this long resets the backoff
  ackInterval: 1000          // ms: at most one ack per this time
};

/** localStorage key of this browser's device ID. */
export const DEVICE_KEY = 'imclient.deviceID';

const SEEN_PRIVATE_MAX = 2000;   // msgIDs of private messages remembered for de-duplication

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
  constructor(message, { code = null, codeMsg = '', detail = '', cmd = '', room, status } = {}) {
    super(message);
    this.name = 'IMError';
    this.code = code;
    this.codeMsg = codeMsg;
    this.detail = detail;
    this.cmd = cmd;
    if (room !== undefined) this.room = room;
    if (status !== undefined) this.status = status;
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

/** ws(s)://host:port/path/acc -> http(s)://host:port/path/upload: every port serves every route. */
function uploadUrlFor(wsUrl) {
  try {
    const base = globalThis.location ? globalThis.location.href : undefined;
    const u = new URL(wsUrl, base);
    u.protocol = u.protocol === 'wss:' || u.protocol === 'https:' ? 'https:' : 'http:';
    u.pathname = u.pathname.replace(/\/acc\/?$/, '').replace(/\/+$/, '') + '/upload';
    u.search = '';
    u.hash = '';
    return u.toString();
  } catch (err) {
    return '/upload';
  }
}

function storage() {
  try {
    return globalThis.localStorage || null;
  } catch (err) {
    return null;   // storage disabled
  }
}

/**
 * This browser's device ID: made once and kept in localStorage under `key`, so that the
 * server keeps one inbox cursor for it across page loads. Without storage, a new one.
 * @param {string} [key]
 * @returns {string}
 */
export function storedDeviceID(key = DEVICE_KEY) {
  const store = storage();
  let id = '';
  try {
    id = store ? String(store.getItem(key) || '') : '';
  } catch (err) { id = ''; }
  if (!/^[A-Za-z0-9_-]{1,48}$/.test(id)) {
    id = 'web-' + randomHex(8);
    try {
      if (store) store.setItem(key, id);
    } catch (err) { /* not kept: this page's own ID */ }
  }
  return id;
}

/**
 * The device ID for this page, one per open page of the browser: the first page gets
 * storedDeviceID(), a second one open at the same time `<id>-2`, and so on, each as long
 * as the page lives (Web Locks), so that two tabs do not replace each other's login.
 * Without Web Locks, storedDeviceID().
 * @param {{key?: string, slots?: number}} [options]
 * @returns {Promise<string>}
 */
export function claimDeviceID({ key = DEVICE_KEY, slots = 8 } = {}) {
  const base = storedDeviceID(key);
  const locks = globalThis.navigator && globalThis.navigator.locks;
  if (!locks || typeof locks.request !== 'function') return Promise.resolve(base);
  const take = (id) => new Promise((resolve, reject) => {
    locks.request('imclient.device:' + id, { ifAvailable: true }, (lock) => {
      resolve(lock ? id : null);
      return lock ? new Promise(() => {}) : undefined;   // held while the page lives
    }).catch(reject);
  });
  const later = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // A page being reloaded may still hold the first slot for a moment: ask twice.
  const attempt = (slot, again) => {
    if (slot > slots) return Promise.resolve(base + '-' + randomHex(4));
    const id = slot === 1 ? base : base + '-' + slot;
    return take(id).then((got) => {
      if (got) return got;
      if (again) return later(400).then(() => attempt(slot, false));
      return attempt(slot + 1, false);
    });
  };
  return attempt(1, true).catch(() => base);
}

/**
 * One connection to an imserver node, kept up by itself.
 *
 * Events (`client.on(name, fn)` calls fn with the event's detail; the client is also an
 * EventTarget, whose events are CustomEvents with that detail):
 * - `state`: `{state, retryAt, stopped, why, code, reason, detail}`, state being
 *   `connecting`, `online` or `offline`.
 * - `message`: `{room, message, recovered}` for a room's message; `message` is the push's data.
 * - `private`: `{message, partner, own, unacked}` for a private message: `partner` is the
 *   other user of the conversation (`from` of a received one, `target` of a copy of one's
 *   own send from another device, `own` true).
 * - `inbox`: `{epoch, offset, unacked, reset}` at each login with a deviceID: `unacked`
 *   private messages follow as `private` events.
 * - `presence`: `{room, kind: 'enter'|'exit', user}`.
 * - `joined`: `{room, epoch, offset}` after a join that did not recover (a first join).
 * - `recovered`: `{room, count}` after a reconnect, once the missed messages were given.
 * - `recoveryfailed`: `{room, epoch, offset}`: what the room missed cannot be replayed;
 *   reload its history.
 * - `send`: `{msgID, room, to, msg, type, status, waiting, attempts, code, detail, duplicate,
 *   offset, epoch, delivered}`, status `pending`, `sent` or `failed`; `to` for a private send.
 * - `error`: `{cmd, code, codeMsg, detail, room}` for an error reply of the server.
 */
export class IMClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.url WebSocket URL of the node's /acc endpoint.
   * @param {number} options.appID The app to log in to.
   * @param {string} options.userID The user's ID.
   * @param {string} [options.serviceToken] Login token, when the node wants one.
   * @param {string} [options.deviceID] This device (default: storedDeviceID(); '' logs in
   *   without one: no inbox, live private messages only).
   * @param {string} [options.uploadUrl] The node's POST /upload URL (default: from `url`).
   * @param {number} [options.ackInterval=1000] At most one ack per this many ms.
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
    this.deviceID = options.deviceID === undefined || options.deviceID === null
      ? storedDeviceID() : String(options.deviceID);
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
    this._outbox = [];            // sends in order: {msgID, room, to, msg, type, attempts}
    this._sending = null;         // the one on its way
    // The user's inbox as this device sees it: the place reached (every private message up
    // to `offset` of `epoch` was given or sent from here), own sends' places beyond it,
    // how many unacknowledged ones the last login announced, and the ack.
    this._inbox = this._newInbox('');
    this._seenPrivate = new Map();   // from + US + msgID -> true, the newest last
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
    this._flushAck();
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
    if (String(userID) !== this.userID) {
      this._inbox = this._newInbox('');
      this._seenPrivate.clear();
    }
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
   * Read a room's history, or the user's inbox (`history({inbox: true, ...})`): the newest
   * `limit` kept messages below `before`, oldest first. Rejects with an IMError when not
   * online or refused.
   * @param {string|{inbox: true, before?: number, limit?: number}} room '' for the app's
   *   own room; an object with `inbox: true` for the user's private conversation.
   * @param {{before?: number, limit?: number}} [page]
   * @returns {Promise<{room?: string, inbox?: true, epoch: string, offset: number, publications: object[]}>}
   */
  history(room, page = {}) {
    const inbox = Boolean(room && typeof room === 'object' && room.inbox === true);
    const { before, limit } = inbox ? room : (page || {});
    const place = inbox ? { inbox: true } : { room: String(room) };
    if (!this._online) {
      return Promise.reject(new IMError(NOT_CONNECTED, Object.assign({ cmd: 'history' }, place)));
    }
    const data = Object.assign({}, place);
    if (before !== undefined && before !== null) data.before = before;
    if (limit !== undefined && limit !== null) data.limit = limit;
    return this._request('history', data).then((response) => {
      if (response.code !== OK) throw this._failed('history', response, inbox ? undefined : place.room);
      const reply = response.data || {};
      return Object.assign(place, {
        epoch: typeof reply.epoch === 'string' ? reply.epoch : '',
        offset: Number(reply.offset) || 0,
        publications: Array.isArray(reply.publications) ? reply.publications : []
      });
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
    const entry = { msgID, room: String(room), to: '', msg: String(msg), type, attempts: 0 };
    this._enqueue(entry);
    return { msgID, room: entry.room, msg: entry.msg, type, status: 'pending' };
  }

  /**
   * Send a private message to user `to`. Like publish(): it waits while the client is not
   * logged in, goes out after the next login in order with its msgID, and what becomes of
   * it arrives as `send` events (with `to`). The server keeps it in both users' inboxes.
   * @param {string} to
   * @param {string} msg
   * @param {{type?: string, msgID?: string}} [options]
   * @returns {{msgID: string, to: string, msg: string, type: string, status: string}}
   */
  send(to, msg, { type = 'text', msgID = newMsgID() } = {}) {
    const entry = { msgID, room: '', to: String(to), msg: String(msg), type, attempts: 0 };
    // Its copy in this user's inbox is this message: not given again when it comes back.
    this._sawPrivate(this.userID, msgID);
    this._enqueue(entry);
    return { msgID, to: entry.to, msg: entry.msg, type, status: 'pending' };
  }

  /**
   * Acknowledge the inbox up to `offset` (default: every private message given so far):
   * this device is not given them again at its next login. Call it once they are shown.
   * Acks only move forward and go out at most once per `ackInterval`, the last one
   * after the next login when the client is offline.
   * @param {number} [offset]
   */
  ack(offset) {
    const inbox = this._inbox;
    const at = offset === undefined || offset === null ? inbox.offset : Math.min(Number(offset), inbox.offset);
    if (!inbox.epoch || !(at > inbox.acked) || !(at > inbox.ackWanted)) return;
    inbox.ackWanted = at;
    this._scheduleAck();
  }

  /** The last place given in the user's inbox. @returns {{epoch: string, offset: number}|null} */
  get inbox() {
    return this._inbox.epoch ? { epoch: this._inbox.epoch, offset: this._inbox.offset,
      acked: this._inbox.acked } : null;
  }

  /**
   * Upload an image (POST /upload, multipart part `file`, with the login token as
   * `Authorization: Bearer` when there is one). Resolves with the URL the server gave
   * (`/files/<id>`, relative to the server); rejects with an IMError (`code`, `detail`,
   * `status`).
   * @param {Blob|File} file
   * @param {{url?: string, name?: string}} [options]
   * @returns {Promise<string>}
   */
  upload(file, { url, name } = {}) {
    const target = url || this.options.uploadUrl || uploadUrlFor(this.url);
    const form = new FormData();
    form.append('file', file, name || (file && file.name) || 'image');
    const headers = { Accept: 'application/json' };
    if (this.serviceToken) headers.Authorization = 'Bearer ' + this.serviceToken;
    return fetch(target, { method: 'POST', body: form, headers, cache: 'no-store' }).then((res) => {
      return res.text().then((text) => {
        let body = null;
        try { body = JSON.parse(text); } catch (err) { body = null; }
        if (!body || typeof body !== 'object') {
          throw new IMError('HTTP ' + res.status + ': the answer is not JSON', { cmd: 'upload',
            status: res.status });
        }
        const detail = typeof body.detail === 'string' ? body.detail : '';
        if (body.code !== OK || !body.data || typeof body.data.url !== 'string') {
          throw new IMError(detail || 'upload refused (' + body.code + ')', { cmd: 'upload',
            code: body.code, codeMsg: String(body.msg || ''), detail, status: res.status });
        }
        return body.data.url;
      });
    }, (err) => {
      throw new IMError('upload failed: server unreachable', { cmd: 'upload',
        detail: String(err && err.message || err) });
    });
  }

  /** Sends not yet taken by the server, oldest first. @returns {object[]} */
  get pending() {
    return this._outbox.map((e) => ({ msgID: e.msgID, room: e.room, to: e.to, msg: e.msg,
      type: e.type, attempts: e.attempts, waiting: e !== this._sending }));
  }

  // ------------------------------------------------------------------ connection

  _newRoom() {
    return { epoch: '', offset: 0, joining: false, joined: false, held: null, waiters: [] };
  }

  _newInbox(epoch) {
    return { epoch, offset: 0, own: new Set(), expect: 0, top: 0, acked: 0, ackWanted: 0,
      ackTimer: null, ackedAt: 0 };
  }

  _enqueue(entry) {
    if (this.stopped) {
      queueMicrotask(() => this._sendStatus(entry, 'failed', { detail: NOT_CONNECTED }));
    } else {
      this._outbox.push(entry);
      queueMicrotask(() => this._pump());
    }
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
    if (this.deviceID) data.deviceID = this.deviceID;
    this._request('login', data).then((response) => {
      if (response.code === OK) {
        this._inboxAtLogin(response.data && response.data.inbox);
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
    if (this._inbox.ackWanted > this._inbox.acked) this._scheduleAck();
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
    if (data.target) {
      this._private(data);   // an inbox message: its offset is the inbox's
      return;
    }
    const r = this._rooms.get(room);
    if (r && r.held) {
      r.held.push(data);
      return;
    }
    this._deliver(room, data, false);
  }

  /** Give a message to the app unless its room's position says it was seen already. */
  _deliver(room, data, recovered) {
    const r = this._rooms.get(room);
    if (r && typeof data.offset === 'number' && typeof data.epoch === 'string' && data.epoch) {
      if (data.epoch === r.epoch && data.offset <= r.offset) return false;
      r.epoch = data.epoch;
      r.offset = data.offset;
    }
    this._emit('message', { room, message: data, recovered });
    return true;
  }

  // ------------------------------------------------------------------ private messages

  /** The login's word on the inbox: a new epoch voids the place; `unacked` ones follow. */
  _inboxAtLogin(info) {
    let inbox = this._inbox;
    inbox.expect = 0;
    if (!info || typeof info !== 'object' || typeof info.epoch !== 'string') return;
    const epoch = info.epoch;
    const top = Number(info.offset) || 0;
    const unacked = Number(info.unacked) || 0;
    const reset = Boolean(inbox.epoch) && epoch !== inbox.epoch;
    if (epoch !== inbox.epoch) {
      clearTimeout(inbox.ackTimer);
      inbox = this._inbox = this._newInbox(epoch);
    }
    inbox.top = top;
    inbox.expect = unacked;
    if (!unacked) {
      // The device's cursor is at the top: nothing below it comes again.
      inbox.offset = Math.max(inbox.offset, top);
      inbox.acked = Math.max(inbox.acked, top);
    }
    this._emit('inbox', { epoch, offset: top, unacked, reset });
  }

  /** A pushed private message: given once, by its inbox place and by its sender's msgID. */
  _private(data) {
    let inbox = this._inbox;
    const unacked = inbox.expect > 0;
    if (unacked) inbox.expect -= 1;
    let fresh = true;
    if (inbox.epoch && typeof data.offset === 'number' && typeof data.epoch === 'string' && data.epoch) {
      if (data.epoch !== inbox.epoch) {
        // The inbox was made anew (its TTL passed): its places start again.
        clearTimeout(inbox.ackTimer);
        inbox = this._inbox = this._newInbox(data.epoch);
      }
      if (data.offset <= inbox.offset) {
        fresh = false;
      } else {
        inbox.offset = data.offset;
        this._advanceInbox();
      }
    }
    if (unacked && inbox.expect === 0) inbox.offset = Math.max(inbox.offset, inbox.top);
    const from = data.from === undefined || data.from === null ? '' : String(data.from);
    if (fresh && typeof data.msgID === 'string' && data.msgID) fresh = this._sawPrivate(from, data.msgID);
    if (!fresh) return;
    const own = from !== '' && from === this.userID;
    this._emit('private', { message: data, partner: own ? String(data.target) : from, own, unacked });
  }

  /** True the first time a sender's msgID is seen. */
  _sawPrivate(from, msgID) {
    const key = from + '\u001f' + msgID;
    if (this._seenPrivate.has(key)) return false;
    this._seenPrivate.set(key, true);
    if (this._seenPrivate.size > SEEN_PRIVATE_MAX) {
      this._seenPrivate.delete(this._seenPrivate.keys().next().value);
    }
    return true;
  }

  /** An own send's place in the inbox: the place reached passes it once it is next. */
  _ownInboxPlace(epoch, offset) {
    const inbox = this._inbox;
    if (!inbox.epoch || epoch !== inbox.epoch || typeof offset !== 'number' || offset <= inbox.offset) return;
    inbox.own.add(offset);
    this._advanceInbox();
  }

  _advanceInbox() {
    const inbox = this._inbox;
    while (inbox.own.has(inbox.offset + 1)) {
      inbox.offset += 1;
    }
    inbox.own.forEach((offset) => { if (offset <= inbox.offset) inbox.own.delete(offset); });
  }

  _scheduleAck() {
    const inbox = this._inbox;
    if (inbox.ackTimer || !this._online) return;
    const wait = Math.max(0, inbox.ackedAt + this.options.ackInterval - Date.now());
    inbox.ackTimer = setTimeout(() => {
      inbox.ackTimer = null;
      this._sendAck(inbox);
    }, wait);
  }

  _sendAck(inbox) {
    if (inbox !== this._inbox || !this._online || !this.deviceID) return;
    const offset = inbox.ackWanted;
    if (!(offset > inbox.acked)) return;
    inbox.ackedAt = Date.now();
    this._request('ack', { offset }).then((response) => {
      if (response.code === OK) {
        inbox.acked = Math.max(inbox.acked, offset);
      } else if (response.code === NOT_LOGGED_IN) {
        // acked after the next login
      } else {
        this._failed('ack', response);
        inbox.acked = Math.max(inbox.acked, offset);   // not tried again
      }
    }, () => { /* the socket went: acked after the next login */ });
  }

  /** The page goes: the ack that waits for its interval goes now. */
  _flushAck() {
    const inbox = this._inbox;
    if (!this._online || !this.deviceID || !(inbox.ackWanted > inbox.acked)) return;
    clearTimeout(inbox.ackTimer);
    inbox.ackTimer = null;
    this._request('ack', { offset: inbox.ackWanted }).catch(() => {});
    inbox.acked = inbox.ackWanted;
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
      msgID: entry.msgID, room: entry.room, to: entry.to, msg: entry.msg, type: entry.type, status,
      waiting: status === 'pending' && entry !== this._sending, attempts: entry.attempts
    }, extra));
  }

  /** Sends the oldest waiting message when logged in and none is on its way. */
  _pump() {
    if (this._sending || !this._online || !this._outbox.length) return;
    const entry = this._outbox[0];
    if (!entry.to && entry.room !== '' && this._rooms.has(entry.room) && this._rooms.get(entry.room).joining) return;
    this._sending = entry;
    entry.attempts += 1;
    this._sendStatus(entry, 'pending');
    const cmd = entry.to ? 'send' : 'publish';
    const data = entry.to ? { to: entry.to, msg: entry.msg, type: entry.type, msgID: entry.msgID }
      : { room: entry.room, msg: entry.msg, type: entry.type, msgID: entry.msgID };
    this._request(cmd, data).then((response) => {
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
        if (entry.to) this._ownInboxPlace(reply.epoch, reply.offset);
        this._sendStatus(entry, 'sent', { duplicate: reply.duplicate === true,
          offset: reply.offset, epoch: reply.epoch, delivered: reply.delivered === true });
      } else {
        const err = this._failed(cmd, response, entry.to ? undefined : entry.room);
        this._sendStatus(entry, 'failed', this._codeOf(err));
      }
      this._pump();
    }, () => {
      // No answer (the socket went): it may or may not have been taken. It goes again
      // after the next login with the same msgID, which the server takes once.
      if (this._sending === entry) this._sending = null;
    });
  }
}
