/*
 * imserver chat page.
 *
 * Plain JavaScript, no framework and no build step. The page logs in over the
 * WebSocket endpoint /acc, keeps the connection alive with heartbeats, shows
 * pushed messages and presence events, sends messages through the HTTP API
 * (POST /user/sendMessageAll) while logged in (what is typed meanwhile waits)
 * and reconnects by itself with a capped, jittered exponential backoff. The
 * wire contract is PROTOCOL.md.
 *
 * The server picks the page's default name (userID) and, when logins need one,
 * a token for it (token): the login's serviceToken, and the Authorization
 * header of API calls. The user may choose another name; the server checks it
 * and mints its token (GET /home/token). The name is kept in this tab's
 * sessionStorage, so reloads and room switches keep it while another tab gets
 * a name of its own.
 *
 * Every piece of text that a user chose (names, messages, server reasons) is
 * put into the page with textContent, never parsed as HTML.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- config

  var DEFAULTS = {
    appID: 101,
    rooms: [101, 102, 103, 104],
    wsUrl: '',
    wsPort: 8089,
    httpUrl: '',
    basePath: '',
    heartbeatInterval: 30,
    presenceMaxRoom: 1000,
    userID: '',
    token: '',
    roomNotFound: '',
    maxMessageLength: 16384,
    nameMaxLength: 20,
    guestPrefix: ''
  };

  var RECONNECT_BASE_MS = 1000;
  var RECONNECT_MAX_MS = 30000;
  var STABLE_AFTER_MS = 10000;      // a login that lasts this long resets the backoff
  var CONNECT_TIMEOUT_MS = 10000;   // opening the socket
  var REQUEST_TIMEOUT_MS = 10000;   // a reply to login / heartbeat, an HTTP answer
  var LIST_POLL_MS = 30000;         // online list refresh when presence events are off
  var MAX_MESSAGES = 500;           // kept in the page
  var MAX_LISTED_USERS = 300;       // rendered in the sidebar
  var NAME_KEY = 'imserver.name';  // sessionStorage: this tab's name
  var COUNTER_FROM = 0.8;           // the counter shows from this share of the length limit

  var CODES = {
    OK: 200,
    NOT_LOGGED_IN: 1000,
    INVALID_USER_ID: 1002,
    UNAUTHORIZED: 1003,
    ALREADY_DONE: 1009
  };

  // The page's language for the codes; the wire's codeMsg texts are Chinese.
  var CODE_TEXT = {
    1000: 'not logged in',
    1001: 'invalid parameters',
    1002: 'invalid user name',
    1003: 'not authorized',
    1004: 'server error',
    1005: 'no data',
    1006: 'could not add',
    1007: 'could not delete',
    1008: 'could not store',
    1009: 'operation failed',
    1010: 'no such command or route',
    1100: 'a server of the cluster did not answer',
    1101: 'too many messages, slow down'
  };

  /** "invalid parameters (1001)": what a code means, in English. */
  function codeText(code) {
    return (CODE_TEXT[code] || 'error') + ' (' + code + ')';
  }

  function readConfig() {
    var cfg = {};
    var key;
    for (key in DEFAULTS) {
      if (Object.prototype.hasOwnProperty.call(DEFAULTS, key)) cfg[key] = DEFAULTS[key];
    }
    var node = document.getElementById('config');
    if (node) {
      try {
        var given = JSON.parse(node.textContent || '{}');
        for (key in given) {
          if (Object.prototype.hasOwnProperty.call(given, key) && given[key] !== null) cfg[key] = given[key];
        }
      } catch (err) {
        console.error('chat: unreadable page config, using defaults', err);
      }
    }
    cfg.appID = Number(cfg.appID) || DEFAULTS.appID;
    cfg.wsPort = Number(cfg.wsPort) || 0;
    cfg.heartbeatInterval = Number(cfg.heartbeatInterval) > 0 ? Number(cfg.heartbeatInterval) : DEFAULTS.heartbeatInterval;
    cfg.presenceMaxRoom = Number(cfg.presenceMaxRoom);
    if (!(cfg.presenceMaxRoom >= 0)) cfg.presenceMaxRoom = DEFAULTS.presenceMaxRoom;
    cfg.wsUrl = String(cfg.wsUrl || '').trim();
    cfg.httpUrl = String(cfg.httpUrl || '').trim();
    cfg.basePath = String(cfg.basePath || '').replace(/\/+$/, '');
    cfg.userID = String(cfg.userID || '');
    cfg.token = String(cfg.token || '');
    cfg.roomNotFound = String(cfg.roomNotFound || '');
    cfg.maxMessageLength = Number(cfg.maxMessageLength) > 0 ? Number(cfg.maxMessageLength) : DEFAULTS.maxMessageLength;
    cfg.nameMaxLength = Number(cfg.nameMaxLength) > 0 ? Number(cfg.nameMaxLength) : DEFAULTS.nameMaxLength;
    cfg.guestPrefix = String(cfg.guestPrefix || '');
    return cfg;
  }

  var cfg = readConfig();

  /** ws(s)://<ws_url>/acc, or ws(s)://<page host>:<ws_port>/acc when ws_url is empty. */
  function wsEndpoint() {
    var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    var given = cfg.wsUrl;
    if (/^wss?:\/\//i.test(given)) {
      // A complete URL: keep it, adding /acc when it names no path.
      return /^wss?:\/\/[^\/]+\/?$/i.test(given) ? given.replace(/\/?$/, '/acc') : given;
    }
    if (given) {
      given = given.replace(/\/+$/, '');
      return scheme + given + (given.indexOf('/') === -1 ? '/acc' : '');
    }
    var port = cfg.wsPort ? ':' + cfg.wsPort : (location.port ? ':' + location.port : '');
    return scheme + location.hostname + port + '/acc';
  }

  /** Prefix for API paths: same origin when http_url is empty, else http(s)://<http_url>. */
  function apiBase() {
    var given = cfg.httpUrl.replace(/\/+$/, '');
    if (/^https?:\/\//i.test(given)) return given;
    if (given) return location.protocol + '//' + given;
    return cfg.basePath;
  }

  // ---------------------------------------------------------------- helpers

  function $(id) { return document.getElementById(id); }

  function randomInt(n) {
    var buf = new Uint32Array(1);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(buf);
      return buf[0] % n;
    }
    return Math.floor(Math.random() * n);
  }

  function randomHex(bytes) {
    var out = '';
    for (var i = 0; i < bytes; i++) out += (0x100 + randomInt(256)).toString(16).slice(1);
    return out;
  }

  var seqCounter = 0;
  /** Request seq: time, a counter and a random part, the shape the original page used. */
  function nextSeq() {
    seqCounter += 1;
    return Date.now() + '-' + seqCounter + '-' + randomHex(3);
  }

  function newMsgID() { return Date.now().toString(36) + '-' + randomHex(8); }

  function clock(date) {
    var h = date.getHours();
    var m = date.getMinutes();
    return (h < 10 ? '0' : '') + h + ':' + (m < 10 ? '0' : '') + m;
  }

  /** First visible character of a name, for the avatar. */
  function initial(name) {
    var chars = Array.from(String(name).trim());
    return chars.length ? chars[0].toUpperCase() : '?';
  }

  /** A stable colour per name, so a user keeps one avatar colour. */
  function colorFor(name) {
    var hash = 0;
    var s = String(name);
    for (var i = 0; i < s.length; i++) hash = (hash * 31 + s.charCodeAt(i)) | 0;
    return 'hsl(' + (Math.abs(hash) % 360) + ', 55%, 48%)';
  }

  // ---------------------------------------------------------------- name and token

  /** The name the server chose for this page (a page rendered without one: a guest name). */
  function pageName() {
    return cfg.userID || 'Guest' + (1000 + randomInt(9000));
  }

  function storedName() {
    try {
      return window.sessionStorage.getItem(NAME_KEY) || '';
    } catch (err) {
      return '';   // storage disabled: every page gets the server's name
    }
  }

  function storeName(name) {
    try {
      window.sessionStorage.setItem(NAME_KEY, name);
    } catch (err) { /* storage disabled: the name lasts as long as the page */ }
  }

  // Characters that are invisible or misleading in a name: control, format (zero
  // width, bidi overrides), surrogate, private-use, unassigned; line breaks. The
  // server checks the same.
  var NOT_IN_NAMES = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/u;

  /** Why a typed name cannot be used ('' when it can). */
  function nameProblem(name) {
    if (!name) return 'Type a name.';
    if (Array.from(name).length > cfg.nameMaxLength) {
      return 'A name is at most ' + cfg.nameMaxLength + ' characters.';
    }
    if (NOT_IN_NAMES.test(name)) return 'A name cannot hold control or invisible characters.';
    return '';
  }

  /** The name as the user typed it: without the guest prefix the server adds. */
  function typedPart(name) {
    var prefix = cfg.guestPrefix;
    return prefix && name.indexOf(prefix) === 0 ? name.slice(prefix.length) : name;
  }

  /** True when the page's token has passed its exp claim (it cannot log in again). */
  function tokenExpired() {
    if (!cfg.token) return false;
    try {
      var part = cfg.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      var claims = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4)));
      return typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now();
    } catch (err) {
      return false;
    }
  }

  // ---------------------------------------------------------------- page state

  var els = {
    app: $('app'),
    status: $('status'),
    myName: $('my-name'),
    banner: $('banner'),
    messages: $('messages'),
    composer: $('composer'),
    input: $('message-input'),
    send: $('send-button'),
    onlineList: $('online-list'),
    onlineCount: $('online-count'),
    onlineCountShort: $('online-count-short'),
    onlineNote: $('online-note'),
    onlineToggle: $('online-toggle'),
    counter: $('char-counter'),
    nameEdit: $('name-edit'),
    nameForm: $('name-form'),
    nameInput: $('name-input'),
    nameCancel: $('name-cancel'),
    nameHint: $('name-hint')
  };

  var myName = pageName();
  var baseTitle = document.title;
  var unread = 0;

  els.myName.textContent = myName;
  els.myName.title = myName;

  // ---------------------------------------------------------------- rendering

  function setStatus(state, text) {
    els.status.setAttribute('data-state', state);
    els.status.textContent = text;
  }

  function showBanner(text, action) {
    var banner = els.banner;
    banner.textContent = '';
    var span = document.createElement('span');
    span.textContent = text;
    banner.appendChild(span);
    if (action) {
      var button = document.createElement('button');
      button.type = 'button';
      button.className = 'banner-action';
      button.textContent = action.label;
      button.addEventListener('click', action.run);
      banner.appendChild(document.createTextNode(' '));
      banner.appendChild(button);
    }
    banner.hidden = false;
  }

  function hideBanner() {
    els.banner.hidden = true;
    els.banner.textContent = '';
  }

  function nearBottom() {
    var list = els.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function append(node, forceScroll) {
    var stick = forceScroll || nearBottom();
    els.messages.appendChild(node);
    while (els.messages.children.length > MAX_MESSAGES) {
      els.messages.removeChild(els.messages.firstChild);
    }
    if (stick) els.messages.scrollTop = els.messages.scrollHeight;
  }

  /** A centred line such as "alice joined". kind: "", "ok" or "error". */
  function notice(text, kind) {
    var li = document.createElement('li');
    li.className = 'notice' + (kind ? ' ' + kind : '');
    li.setAttribute('data-testid', 'notice');
    li.textContent = text;
    append(li, kind === 'error');
    return li;
  }

  /** A chat bubble; its text is "from: msg" (the time is CSS generated content). */
  function messageBubble(from, text, own) {
    var li = document.createElement('li');
    li.className = 'msg' + (own ? ' own' : '');
    li.setAttribute('data-testid', 'message');
    li.setAttribute('data-from', from);

    var avatar = document.createElement('span');
    avatar.className = 'avatar';
    avatar.setAttribute('aria-hidden', 'true');
    avatar.setAttribute('data-initial', initial(from));
    avatar.style.background = colorFor(from);

    var bubble = document.createElement('div');
    bubble.className = 'bubble';
    bubble.setAttribute('data-time', clock(new Date()));

    var fromEl = document.createElement('span');
    fromEl.className = 'from';
    fromEl.style.color = colorFor(from);
    fromEl.textContent = from;

    var sep = document.createElement('span');
    sep.className = 'sep';
    sep.textContent = ': ';

    var body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;

    bubble.appendChild(fromEl);
    bubble.appendChild(sep);
    bubble.appendChild(body);
    li.appendChild(avatar);
    li.appendChild(bubble);
    return li;
  }

  function showMessage(from, text) {
    append(messageBubble(from, text, false), false);
    if (document.hidden) {
      unread += 1;
      document.title = '(' + unread + ') ' + baseTitle;
    }
  }

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden && unread) {
      unread = 0;
      document.title = baseTitle;
    }
  });

  // ---------------------------------------------------------------- HTTP API

  /**
   * Calls the HTTP API. GET parameters go into the query string, POST ones
   * into an application/x-www-form-urlencoded body. Resolves with `data` of
   * an answer whose code is 200; rejects with an Error whose message says why,
   * with `status` (the HTTP status) when the server answered and `network`
   * when it did not.
   */
  function api(method, path, params) {
    var url = apiBase() + path;
    var query = new URLSearchParams(params);
    var options = { method: method, headers: { 'Accept': 'application/json' }, cache: 'no-store' };
    if (cfg.token) options.headers.Authorization = 'Bearer ' + cfg.token;
    if (method === 'GET') {
      url += '?' + query.toString();
    } else {
      options.body = query;   // fetch sends it as application/x-www-form-urlencoded
    }
    var controller = typeof AbortController === 'function' ? new AbortController() : null;
    var timer = null;
    if (controller) {
      options.signal = controller.signal;
      timer = setTimeout(function () { controller.abort(); }, REQUEST_TIMEOUT_MS);
    }
    return fetch(url, options).then(function (res) {
      return res.text().then(function (text) {
        var body = null;
        try { body = JSON.parse(text); } catch (err) { body = null; }
        if (!body || typeof body !== 'object') {
          var bad = new Error('HTTP ' + res.status + (res.ok ? ': answer is not JSON' : ''));
          bad.status = res.status;
          throw bad;
        }
        if (body.code !== CODES.OK) {
          // The API's detail says what is wrong in words; the code's name is the fallback.
          var detail = typeof body.detail === 'string' && body.detail ? body.detail : '';
          var failed = new Error(detail ? detail + ' (' + body.code + ')' : codeText(body.code));
          failed.code = body.code;
          failed.status = res.status;
          failed.detail = detail;
          throw failed;
        }
        return body.data || {};
      });
    }, function (err) {
      var down = new Error(err && err.name === 'AbortError' ? 'no answer from the server' : 'server unreachable');
      down.network = true;
      throw down;
    }).then(function (data) {
      clearTimeout(timer);
      return data;
    }, function (err) {
      clearTimeout(timer);
      throw err;
    });
  }

  // ---------------------------------------------------------------- online list

  var online = new Set();
  var roster = {
    fetchID: 0,
    eventsDuringFetch: null,   // presence events that arrive while /user/list is on its way
    pollTimer: null
  };

  function renderOnline() {
    var names = Array.from(online);
    names.sort(function (a, b) {
      if (a === myName) return -1;
      if (b === myName) return 1;
      return a.localeCompare(b);
    });
    var fragment = document.createDocumentFragment();
    names.slice(0, MAX_LISTED_USERS).forEach(function (name) {
      var li = document.createElement('li');
      li.className = 'online-user' + (name === myName ? ' self' : '');
      li.setAttribute('data-testid', 'online-user');
      li.setAttribute('data-name', name);
      var avatar = document.createElement('span');
      avatar.className = 'avatar';
      avatar.setAttribute('aria-hidden', 'true');
      avatar.setAttribute('data-initial', initial(name));
      avatar.style.background = colorFor(name);
      var label = document.createElement('span');
      label.className = 'name';
      label.title = name;
      label.textContent = name;
      li.appendChild(avatar);
      li.appendChild(label);
      fragment.appendChild(li);
    });
    if (names.length > MAX_LISTED_USERS) {
      var more = document.createElement('li');
      more.className = 'online-more';
      more.textContent = 'and ' + (names.length - MAX_LISTED_USERS) + ' more';
      fragment.appendChild(more);
    }
    els.onlineList.textContent = '';
    els.onlineList.appendChild(fragment);
    // While we are not logged in the list may be out of date: show it faded.
    els.onlineList.classList.toggle('stale', !conn.loggedIn);
    els.onlineCount.textContent = String(names.length);
    els.onlineCountShort.textContent = String(names.length);
  }

  /** Presence events are off for this room: read the list every 30 s instead. */
  function presenceEventsOff() {
    return cfg.presenceMaxRoom === 0 || online.size > cfg.presenceMaxRoom;
  }

  function updatePolling() {
    var poll = conn.loggedIn && presenceEventsOff();
    if (poll && !roster.pollTimer) {
      roster.pollTimer = setInterval(refreshOnline, LIST_POLL_MS);
    } else if (!poll && roster.pollTimer) {
      clearInterval(roster.pollTimer);
      roster.pollTimer = null;
    }
    els.onlineNote.textContent = poll ? 'Large room: the list refreshes every 30 s.' : '';
  }

  function refreshOnline() {
    var id = ++roster.fetchID;
    roster.eventsDuringFetch = [];
    return api('GET', '/user/list', { appID: cfg.appID }).then(function (data) {
      if (id !== roster.fetchID) return;
      var names = Array.isArray(data.userList) ? data.userList : [];
      var next = new Set(names.map(String));
      (roster.eventsDuringFetch || []).forEach(function (event) {
        if (event.enter) next.add(event.name); else next.delete(event.name);
      });
      roster.eventsDuringFetch = null;
      if (conn.loggedIn) next.add(myName);
      online = next;
      renderOnline();
      updatePolling();
    }, function (err) {
      if (id !== roster.fetchID) return;
      roster.eventsDuringFetch = null;
      notice('Could not load the online list: ' + err.message, 'error');
    });
  }

  function userEntered(name) {
    if (roster.eventsDuringFetch) roster.eventsDuringFetch.push({ enter: true, name: name });
    if (name === myName) return;
    online.add(name);
    renderOnline();
    notice(name + ' joined');
    updatePolling();
  }

  function userLeft(name) {
    if (name === myName) return;   // an older connection of ours; this one is still here
    if (roster.eventsDuringFetch) roster.eventsDuringFetch.push({ enter: false, name: name });
    online.delete(name);
    renderOnline();
    notice(name + ' left');
  }

  // ---------------------------------------------------------------- WebSocket

  var conn = {
    ws: null,
    loggedIn: false,
    everOnline: false,
    stopped: false,        // no reconnecting (login refused, replaced, page hidden)
    attempt: 0,            // reconnect attempts since the last stable login
    logins: 0,             // successful logins so far
    retryTimer: null,
    countdownTimer: null,
    connectTimer: null,
    stableTimer: null,
    heartbeatTimer: null,
    lastHeard: 0,
    pending: {}            // seq -> {resolve, reject, timer}
  };

  function rejectPending(reason) {
    var pending = conn.pending;
    conn.pending = {};
    Object.keys(pending).forEach(function (seq) {
      clearTimeout(pending[seq].timer);
      pending[seq].reject(new Error(reason));
    });
  }

  /** Sends a request frame; resolves with the reply's `response` object. */
  function request(cmd, data, timeoutMs) {
    return new Promise(function (resolve, reject) {
      var ws = conn.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new Error('not connected'));
        return;
      }
      var seq = nextSeq();
      var entry = { resolve: resolve, reject: reject, timer: null };
      entry.timer = setTimeout(function () {
        delete conn.pending[seq];
        reject(new Error('no answer to ' + cmd));
      }, timeoutMs || REQUEST_TIMEOUT_MS);
      conn.pending[seq] = entry;
      try {
        ws.send(JSON.stringify({ seq: seq, cmd: cmd, data: data || {} }));
      } catch (err) {
        clearTimeout(entry.timer);
        delete conn.pending[seq];
        reject(err);
      }
    });
  }

  function connect() {
    clearTimeout(conn.retryTimer);
    clearInterval(conn.countdownTimer);
    conn.retryTimer = null;
    conn.countdownTimer = null;
    if (conn.ws) return;
    conn.stopped = false;
    setStatus(conn.everOnline || conn.attempt ? 'reconnecting' : 'connecting',
      conn.everOnline || conn.attempt ? 'Reconnecting…' : 'Connecting…');

    var ws;
    try {
      ws = new WebSocket(wsEndpoint());
    } catch (err) {
      notice('Cannot open the connection: ' + err.message, 'error');
      scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    conn.ws = ws;
    conn.connectTimer = setTimeout(function () {
      if (conn.ws === ws && ws.readyState === WebSocket.CONNECTING) {
        dropConnection('the server did not answer');
      }
    }, CONNECT_TIMEOUT_MS);

    ws.onopen = function () {
      if (conn.ws !== ws) return;
      clearTimeout(conn.connectTimer);
      conn.lastHeard = Date.now();
      login();
    };
    ws.onmessage = function (event) {
      if (conn.ws !== ws) return;
      conn.lastHeard = Date.now();
      var raw = event.data;
      if (typeof raw !== 'string') raw = new TextDecoder('utf-8').decode(raw);
      handleFrame(raw);
    };
    ws.onerror = function () { /* a close event follows and is handled there */ };
    ws.onclose = function (event) {
      if (conn.ws !== ws) return;
      disconnected(event.code, event.reason);
    };
  }

  function login() {
    request('login', { serviceToken: cfg.token, appID: cfg.appID, userID: myName }).then(function (response) {
      var code = response && response.code;
      if (code === CODES.OK) {
        loggedIn();
      } else {
        loginRefused(code);
      }
    }, function (err) {
      if (conn.ws) dropConnection('login: ' + err.message);
    });
  }

  function loggedIn() {
    conn.loggedIn = true;
    conn.everOnline = true;
    conn.logins += 1;
    hideBanner();
    setStatus('online', 'Online');
    notice('You are connected as ' + myName, 'ok');
    clearTimeout(conn.stableTimer);
    conn.stableTimer = setTimeout(function () { conn.attempt = 0; }, STABLE_AFTER_MS);
    startHeartbeat();
    online.add(myName);
    renderOnline();
    refreshOnline();
    outboxOnline();
  }

  function loginRefused(code) {
    var expired = code === CODES.UNAUTHORIZED && tokenExpired();
    var what = code === CODES.INVALID_USER_ID ? 'the name "' + myName + '" was refused'
      : expired ? 'this page\'s sign-in has expired, reload the page'
        : code === CODES.UNAUTHORIZED ? 'room ' + cfg.appID + ' is not open' + (cfg.token ? ' or the sign-in was refused' : '')
          : 'the server refused the login';
    var text = 'Login failed: ' + codeText(code) + ': ' + what + '.';
    if (code === CODES.INVALID_USER_ID || code === CODES.UNAUTHORIZED) {
      // Trying again would fail the same way: stop and say so. Another name comes from
      // the name form; a fresh token with a reload.
      var rename = code === CODES.INVALID_USER_ID;
      stop('error', 'Login failed');
      showBanner(text, {
        label: rename ? 'Choose another name' : expired ? 'Reload' : 'Try again',
        run: function () {
          if (rename) {
            openNameForm();
            return;
          }
          if (expired) {
            location.reload();
            return;
          }
          hideBanner();
          conn.attempt = 0;
          connect();
        }
      });
      notice(text, 'error');
      outboxGiveUp();
      return;
    }
    notice(text, 'error');
    dropConnection(null);
  }

  /** Leaves the socket and does not come back until connect() is called. */
  function stop(state, text) {
    conn.stopped = true;
    clearTimeout(conn.retryTimer);
    clearInterval(conn.countdownTimer);
    conn.retryTimer = null;
    conn.countdownTimer = null;
    var ws = conn.ws;
    conn.ws = null;
    cleanUp();
    if (ws) {
      try { ws.close(1000, 'bye'); } catch (err) { /* already closed */ }
    }
    setStatus(state, text);
  }

  /** Closes the current socket ourselves and reconnects. */
  function dropConnection(reason) {
    var ws = conn.ws;
    if (!ws) return;
    conn.ws = null;
    try { ws.close(1000, 'reconnect'); } catch (err) { /* already closed */ }
    if (reason) notice('Connection lost: ' + reason, 'error');
    afterClose();
  }

  function cleanUp() {
    clearTimeout(conn.connectTimer);
    clearTimeout(conn.stableTimer);
    stopHeartbeat();
    rejectPending('connection closed');
    conn.loggedIn = false;
    online.delete(myName);
    renderOnline();
    updatePolling();
    outboxOffline();
  }

  function afterClose() {
    cleanUp();
    if (conn.stopped) return;
    scheduleReconnect();
  }

  // The server closes with a 4000-range code and a reason when it means it:
  // 4000 the same name logged in on another connection, 4001 heartbeat
  // timeout, 4002 too slow to read. A replaced connection must not log in
  // again, or two tabs would keep throwing each other out.
  var CLOSE_REPLACED = 4000;

  function replacedBy(code, reason) {
    return code === CLOSE_REPLACED || /logged in elsewhere|replaced/i.test(reason || '');
  }

  function disconnected(code, reason) {
    conn.ws = null;
    var wasOnline = conn.loggedIn;
    if ((code >= 4000 && code < 5000) || reason) {
      notice('Disconnected by the server: ' + (reason || 'no reason given') + ' (code ' + code + ')', 'error');
    } else if (wasOnline) {
      notice('Connection lost (code ' + code + ')', 'error');
    }
    if (replacedBy(code, reason)) {
      stop('offline', 'Offline');
      outboxGiveUp();
      showBanner('This name logged in somewhere else, so this page was disconnected: ' + (reason || code) + '.', {
        label: 'Reconnect',
        run: function () { hideBanner(); conn.attempt = 0; connect(); }
      });
      return;
    }
    afterClose();
  }

  /** 1 s, 2 s, 4 s … capped at 30 s; each delay drawn from its upper half. */
  function scheduleReconnect() {
    var base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * Math.pow(2, conn.attempt));
    var delay = Math.round(base / 2 + Math.random() * base / 2);
    conn.attempt += 1;
    var due = Date.now() + delay;
    var tick = function () {
      var left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setStatus('reconnecting', left > 0 ? 'Reconnecting in ' + left + ' s…' : 'Reconnecting…');
    };
    tick();
    clearInterval(conn.countdownTimer);
    conn.countdownTimer = setInterval(tick, 1000);
    clearTimeout(conn.retryTimer);
    conn.retryTimer = setTimeout(connect, delay);
  }

  function startHeartbeat() {
    stopHeartbeat();
    var intervalMs = cfg.heartbeatInterval * 1000;
    conn.heartbeatTimer = setInterval(function () {
      if (!conn.loggedIn) return;
      // Nothing heard for two rounds: the socket is dead even if it looks open.
      if (Date.now() - conn.lastHeard > 2 * intervalMs + REQUEST_TIMEOUT_MS) {
        dropConnection('no answer from the server');
        return;
      }
      request('heartbeat', {}).then(function (response) {
        if (response && response.code === CODES.NOT_LOGGED_IN && conn.loggedIn) {
          // The server forgot us (e.g. it swept the login): log in again.
          conn.loggedIn = false;
          stopHeartbeat();
          login();
        }
      }, function (err) {
        if (conn.loggedIn) dropConnection('heartbeat: ' + err.message);
      });
    }, intervalMs);
  }

  function stopHeartbeat() {
    clearInterval(conn.heartbeatTimer);
    conn.heartbeatTimer = null;
  }

  var PUSHED = { msg: true, enter: true, exit: true };

  function handleFrame(raw) {
    var frame;
    try {
      frame = JSON.parse(raw);
    } catch (err) {
      console.warn('chat: frame is not JSON', raw);
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    var response = frame.response && typeof frame.response === 'object' ? frame.response : {};
    var data = response.data && typeof response.data === 'object' ? response.data : {};

    if (PUSHED[frame.cmd] === true) {
      var from = data.from === undefined || data.from === null ? '' : String(data.from);
      if (frame.cmd === 'msg') {
        showMessage(from || 'system', data.msg === undefined || data.msg === null ? '' : String(data.msg));
      } else if (from && frame.cmd === 'enter') {
        userEntered(from);
      } else if (from) {
        userLeft(from);
      }
      return;
    }

    var entry = typeof frame.seq === 'string' ? conn.pending[frame.seq] : undefined;
    if (entry) {
      delete conn.pending[frame.seq];
      clearTimeout(entry.timer);
      entry.resolve(response);
      return;
    }

    // Anything else the server says on its own: show it when it is an error.
    if (response.code !== undefined && response.code !== CODES.OK) {
      notice('Server: ' + codeText(response.code), 'error');
    }
  }

  // ---------------------------------------------------------------- sending

  // A message goes out only while the page is logged in: without its socket the
  // page cannot tell whether the node its HTTP call reaches is one that stays and
  // delivers, and a message that went nowhere must not look sent. The outbox
  // keeps what the user typed, in order, each with the msgID it got when typed,
  // so that sending it again is harmless (the server delivers a msgID once),
  // and posts one at a time, so that the room gets them in that order.
  var NOTE_WAITING = 'waiting for the connection';
  var NOTE_RETRY = 'not sent yet, will retry';
  var NOTE_PARTIAL = 'may not have reached everyone';
  var NOT_CONNECTED = 'not connected to the server';
  // Resends while the same login lasts (the socket is fine but the HTTP call was
  // not): the pauses before each; after the last the message is given back.
  var RESEND_DELAYS_MS = [5000, 10000, 20000];

  var outbox = {
    queue: [],           // {text, msgID, bubble, tried} in the order typed
    busy: false,         // the first one is on its way
    failures: 0,         // 503s and network failures in a row during this login
    resendTimer: null
  };

  function sendMessage() {
    var text = els.input.value.replace(/^\s+|\s+$/g, '');
    if (!text) {
      els.input.value = '';
      els.input.focus();
      return;
    }
    if (conn.stopped) {
      // The page has given up reconnecting: nothing would ever send it. The text stays.
      notice('Message not sent: ' + NOT_CONNECTED, 'error');
      return;
    }
    els.input.value = '';
    els.input.focus();
    updateCounter();

    // The server does not echo a message to its sender: show it ourselves,
    // greyed out until the server has taken it.
    var entry = { text: text, msgID: newMsgID(), bubble: messageBubble(myName, text, true), tried: false };
    entry.bubble.classList.add('pending');
    entry.bubble.setAttribute('aria-busy', 'true');
    entry.bubble.setAttribute('data-msgid', entry.msgID);
    append(entry.bubble, true);
    outbox.queue.push(entry);
    pump();
  }

  /** Posts the oldest message of the outbox, when logged in and none is on its way. */
  function pump() {
    renderOutbox();
    if (outbox.busy || outbox.resendTimer || !outbox.queue.length || !conn.loggedIn) return;
    var entry = outbox.queue[0];
    var login = conn.logins;
    outbox.busy = true;
    renderOutbox();
    var params = { appID: cfg.appID, userID: myName, msgID: entry.msgID, message: entry.text };
    api('POST', '/user/sendMessageAll', params).then(function (data) {
      outbox.busy = false;
      outbox.failures = 0;
      leaveOutbox(entry);
      markSent(entry.bubble, data);
      pump();
    }, function (err) {
      outbox.busy = false;
      if (sendAgainLater(err)) {
        entry.tried = true;
        holdForResend(err, login);
        return;
      }
      leaveOutbox(entry);
      notSent([entry], err.message);
      pump();
    });
  }

  // 503: the node is shutting down (or a proxy has no node to offer) and took
  // nothing; 502 and 504: a proxy lost its node; no answer at all: the call may
  // have reached nobody. The next login goes to a node that stays.
  function sendAgainLater(err) {
    return Boolean(err.network) || err.status === 502 || err.status === 503 || err.status === 504;
  }

  /** A 503 or no answer: the message waits for the next login, not for the same node. */
  function holdForResend(err, login) {
    if (conn.stopped) {
      notSent(outbox.queue.splice(0), NOT_CONNECTED);
      return;
    }
    if (!conn.loggedIn) {
      renderOutbox();     // loggedIn() sends it
      return;
    }
    if (conn.logins !== login) {
      pump();             // logged in again while the call was on its way
      return;
    }
    // The socket stays up, so its node is not leaving: the HTTP call may go
    // through later (a proxy may pick another node). Try a few times, then give up.
    var delay = RESEND_DELAYS_MS[outbox.failures];
    outbox.failures += 1;
    if (delay === undefined) {
      outbox.failures = 0;   // the next message gets its own tries
      notSent(outbox.queue.splice(0), err.message);
      return;
    }
    outbox.resendTimer = setTimeout(function () {
      outbox.resendTimer = null;
      pump();
    }, delay);
    renderOutbox();
  }

  /** A new login: what waits in the outbox goes now. */
  function outboxOnline() {
    outbox.failures = 0;
    clearTimeout(outbox.resendTimer);
    outbox.resendTimer = null;
    pump();
  }

  /** The connection is gone: nothing is sent until the next login. */
  function outboxOffline() {
    clearTimeout(outbox.resendTimer);
    outbox.resendTimer = null;
    renderOutbox();
  }

  /** The page stopped reconnecting: what waits is not sent (one on its way has its answer coming). */
  function outboxGiveUp() {
    var onItsWay = outbox.busy ? outbox.queue.splice(0, 1) : [];
    notSent(outbox.queue.splice(0), NOT_CONNECTED);
    outbox.queue = onItsWay;
  }

  function leaveOutbox(entry) {
    var i = outbox.queue.indexOf(entry);
    if (i >= 0) outbox.queue.splice(i, 1);
  }

  /** Each waiting bubble says why it waits; the one on its way says nothing. */
  function renderOutbox() {
    outbox.queue.forEach(function (entry, i) {
      var onItsWay = outbox.busy && i === 0;
      setNote(entry.bubble, onItsWay ? '' : entry.tried ? NOTE_RETRY : conn.loggedIn ? '' : NOTE_WAITING);
    });
  }

  function markSent(bubble, data) {
    bubble.classList.remove('pending');
    bubble.removeAttribute('aria-busy');
    // The server took it but says that part of the cluster may not have it
    // (e.g. "delivered on this node only" while the cluster store is down).
    var missed = Array.isArray(data.unreachableNodes) && data.unreachableNodes.length > 0;
    var why = typeof data.sendResultsErr === 'string' ? data.sendResultsErr : '';
    if (why || missed) {
      bubble.classList.add('partial');
      setNote(bubble, NOTE_PARTIAL, why || 'some servers did not answer');
    } else {
      setNote(bubble, '');
    }
  }

  /**
   * The small line in an own bubble that says how it stands ('' removes it).
   * CSS shows data-note, so that the message's text stays "from: msg"; the
   * label is for screen readers, the title a tooltip with the server's words.
   */
  function setNote(bubble, note, detail) {
    var el = bubble.querySelector('.note');
    if (!note) {
      if (el) el.parentNode.removeChild(el);
      return;
    }
    if (!el) {
      el = document.createElement('span');
      el.className = 'note';
      el.setAttribute('role', 'img');
      el.setAttribute('data-testid', 'message-note');
      bubble.querySelector('.bubble').appendChild(el);
    }
    var full = detail ? note + ': ' + detail : note;
    el.setAttribute('data-note', note);
    el.setAttribute('aria-label', full);
    el.title = full;
  }

  /** Messages the server did not take: say so and give their text back to the box. */
  function notSent(entries, reason) {
    if (!entries.length) return;
    var texts = entries.map(function (entry) {
      if (entry.bubble.parentNode) entry.bubble.parentNode.removeChild(entry.bubble);
      return entry.text;
    });
    var what = texts.length === 1 ? 'Message not sent: ' : texts.length + ' messages not sent: ';
    notice(what + reason, 'error');
    if (!els.input.value) els.input.value = texts.join(' ');
    updateCounter();
  }

  els.composer.addEventListener('submit', function (event) {
    event.preventDefault();
    sendMessage();
  });

  /** Characters left, shown near the limit (the input itself takes no more). */
  function updateCounter() {
    var limit = cfg.maxMessageLength;
    var used = els.input.value.length;   // UTF-16 units, as the input's maxlength counts
    var left = Math.max(0, limit - used);
    els.counter.hidden = used < Math.floor(limit * COUNTER_FROM);
    els.counter.classList.toggle('full', left === 0);
    els.counter.textContent = left === 0 ? 'limit of ' + limit + ' characters reached'
      : left + (left === 1 ? ' character left' : ' characters left');
  }

  els.input.maxLength = cfg.maxMessageLength;
  els.input.addEventListener('input', updateCounter);
  updateCounter();

  // ---------------------------------------------------------------- the user's name

  function showName() {
    els.myName.textContent = myName;
    els.myName.title = myName;
  }

  /** Log in again under ``name`` (with its token): the room sees the old name leave. */
  function useName(name, token) {
    var wasConnected = Boolean(conn.ws) || conn.loggedIn;
    if (wasConnected) stop('connecting', 'Connecting…');
    online.delete(myName);
    myName = name;
    cfg.token = token;
    storeName(name);
    showName();
    renderOnline();
    hideBanner();
    conn.attempt = 0;
    connect();
  }

  function openNameForm() {
    els.nameForm.hidden = false;
    els.nameEdit.setAttribute('aria-expanded', 'true');
    els.nameHint.textContent = '';
    els.nameInput.value = typedPart(myName);
    els.nameInput.focus();
    els.nameInput.select();
  }

  function closeNameForm() {
    els.nameForm.hidden = true;
    els.nameEdit.setAttribute('aria-expanded', 'false');
    els.nameHint.textContent = '';
  }

  els.nameInput.maxLength = cfg.nameMaxLength;
  els.nameEdit.addEventListener('click', function () {
    if (els.nameForm.hidden) openNameForm(); else closeNameForm();
  });
  els.nameCancel.addEventListener('click', closeNameForm);
  els.nameForm.addEventListener('keydown', function (event) {
    if (event.key === 'Escape') closeNameForm();
  });
  els.nameForm.addEventListener('submit', function (event) {
    event.preventDefault();
    var typed = els.nameInput.value.trim();
    var problem = nameProblem(typed);
    if (!problem && cfg.guestPrefix + typed === myName) {
      closeNameForm();
      return;
    }
    if (!problem && online.has(cfg.guestPrefix + typed)) {
      problem = cfg.guestPrefix + typed + ' is online in this room: choose another name.';
    }
    if (problem) {
      els.nameHint.textContent = problem;
      return;
    }
    els.nameHint.textContent = '';
    api('GET', '/home/token', { appID: cfg.appID, name: typed }).then(function (data) {
      closeNameForm();
      useName(String(data.userID), String(data.token || ''));
    }, function (err) {
      els.nameHint.textContent = 'This name cannot be used: ' + err.message + '.';
    });
  });

  // ---------------------------------------------------------------- sidebar drawer (narrow screens)

  function setDrawer(open) {
    els.app.classList.toggle('show-online', open);
    els.onlineToggle.setAttribute('aria-expanded', open ? 'true' : 'false');
  }

  els.onlineToggle.addEventListener('click', function () {
    setDrawer(!els.app.classList.contains('show-online'));
  });
  els.messages.addEventListener('click', function () { setDrawer(false); });
  document.addEventListener('keydown', function (event) {
    if (event.key === 'Escape') setDrawer(false);
  });

  // ---------------------------------------------------------------- page life

  // Closing the socket as the page goes lets the server send "left" at once.
  window.addEventListener('pagehide', function () {
    if (conn.ws || conn.retryTimer) stop('offline', 'Offline');
  });
  window.addEventListener('pageshow', function (event) {
    if (event.persisted && conn.stopped && !conn.ws) {
      conn.attempt = 0;
      connect();
    }
  });
  // Back on the network: do not wait for the backoff to run out.
  window.addEventListener('online', function () {
    if (!conn.ws && conn.retryTimer) connect();
  });

  // ---------------------------------------------------------------- start

  if (cfg.roomNotFound) {
    notice('There is no room "' + cfg.roomNotFound + '" here: this is room ' + cfg.appID + '.', 'error');
    // The address bar names the room the page shows, so a reload or a bookmark is right.
    try {
      history.replaceState(null, '', location.pathname + '?appID=' + cfg.appID + location.hash);
    } catch (err) { /* an old browser: the address stays as typed */ }
  }

  var kept = storedName();
  if (kept && kept !== myName) {
    // This tab's name from an earlier page: the server checks it and mints its token.
    api('GET', '/home/token', { appID: cfg.appID, name: kept }).then(function (data) {
      myName = String(data.userID);
      cfg.token = String(data.token || '');
      storeName(myName);
      showName();
      connect();
    }, function (err) {
      if (!err.network) {
        storeName(myName);
        notice('Your name "' + kept + '" cannot be used here (' + err.message + '); you are ' + myName + ' now.', 'error');
      } else {
        notice('Could not keep your name "' + kept + '": ' + err.message + '.', 'error');
      }
      connect();
    });
  } else {
    storeName(myName);
    connect();
  }
}());
