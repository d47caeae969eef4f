/*
 * imserver chat page.
 *
 * A plain ES module, no framework and no build step. Everything the page says to the
 * server over the WebSocket goes through imclient.js (docs/CLIENT.md): login,
 * heartbeats, reconnects, rooms, history, recovery after a reconnect and sends that
 * wait while the page is disconnected, private messages and the inbox, image uploads.
 * The page itself shows rooms, private conversations and messages, the online list
 * (GET /user/list, /room/users) and the user's name (GET /home/token).
 * The wire contract is docs/PROTOCOL.md.
 *
 * Rooms: the app rooms (the configured appIDs) are pages of their own (?appID=); within
 * one, the page shows the app's own room and the named rooms the user joined, which are
 * kept in localStorage per appID so that a reload joins them again.
 *
 * Private conversations: a click on a user of the online list opens one; each is an entry
 * of the room list with its unread count, kept in localStorage per appID and user, and
 * shows the user's inbox (history with inbox) filtered to that partner. The page logs in
 * as a device of this browser (claimDeviceID: one per open page), so that what arrives
 * while it is closed is given at the next login, and acknowledges what it has shown.
 *
 * The server picks the page's default name (userID) and, when logins need one, a token
 * for it (token). The user may choose another name; the server checks it and mints its
 * token (GET /home/token). The name is kept in localStorage, so reloads, room switches,
 * other tabs and later visits of this browser keep it.
 *
 * Every piece of text that a user chose (names, rooms, messages, server reasons) is put
 * into the page with textContent, never parsed as HTML.
 */
import { IMClient, NOT_CONNECTED, claimDeviceID } from './imclient.js';

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

var REQUEST_TIMEOUT_MS = 10000;   // an HTTP answer
var LIST_POLL_MS = 30000;         // online list refresh when presence events are off
var MAX_MESSAGES = 500;           // kept in the page
var MAX_LISTED_USERS = 300;       // rendered in the sidebar
var NAME_KEY = 'imserver.name';  // localStorage: this browser's name
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
    return window.localStorage.getItem(NAME_KEY) || '';
  } catch (err) {
    return '';   // storage disabled: every page gets the server's name
  }
}

function storeName(name) {
  try {
    window.localStorage.setItem(NAME_KEY, name);
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

var HISTORY_PAGE = 50;            // messages shown when a room opens, and per "earlier" click
var ROOMS_KEY = 'imserver.rooms.'; // localStorage + appID: the named rooms joined there
var CONVERSATIONS_KEY = 'imserver.conversations.';  // + appID + '.' + user: [{user, unread}]
var SEEN_KEY = 'imserver.seen.';   // + appID + '.' + user: {epoch, offset} of the inbox shown
var INBOX_PAGE = 100;             // inbox messages read per history request
var INBOX_PAGES = 5;              // requests at most, to find a conversation's messages
var CONVERSATION = '\u0001';      // key prefix of a conversation: no room name holds it
// An image message shows inline only when its URL is one of this server's uploads.
var FILE_URL = /^\/files\/[A-Za-z0-9_-]{24}\.(png|jpg|gif|webp)$/;
var ROOM_MAX_CHARS = 64;
var NOT_IN_ROOMS = /[\p{Cc}\u2028\u2029]/u;

var els = {
  app: $('app'),
  status: $('status'),
  myName: $('my-name'),
  banner: $('banner'),
  views: $('views'),
  appView: $('messages'),
  earlier: $('load-earlier'),
  roomName: $('room-name'),
  namedRooms: $('named-rooms'),
  appRoomLink: document.querySelector('[data-testid=room-link][aria-current=page]'),
  roomForm: $('room-form'),
  roomInput: $('room-input'),
  roomHint: $('room-hint'),
  roomAdd: $('room-add'),
  roomCancel: $('room-cancel'),
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
  nameHint: $('name-hint'),
  conversations: $('conversations'),
  attach: $('attach-button'),
  fileInput: $('file-input')
};

var myName = pageName();
var baseTitle = document.title;
var hiddenUnread = 0;      // messages while the tab was hidden, for the title
var client = null;         // the IMClient, made once the name is known
var everOnline = false;

els.myName.textContent = myName;
els.myName.title = myName;

// ---------------------------------------------------------------- rooms

/**
 * One room shown by the page: '' is the app's own room. Each has its own message list
 * (only the shown one is visible and carries data-testid="messages"), its unread count,
 * its online list and what of its history is loaded.
 */
var rooms = new Map();
var shown = '';

function makeRoom(name, view, partner) {
  var room = {
    name: name,
    partner: partner || '',  // a private conversation with this user
    view: view,
    byID: new Map(),        // msgID -> message element: a message is shown once
    unread: 0,
    loaded: false,          // the latest history is shown
    loading: false,
    lowest: 0,              // lowest offset shown from history, for "earlier messages"
    more: false,            // the server may keep older ones
    online: new Set(),
    fetchID: 0,
    eventsDuringFetch: null,
    entry: null,            // its entry in the room list
    badge: null
  };
  rooms.set(name, room);
  return room;
}

makeRoom('', els.appView);

function storedRooms() {
  try {
    var list = JSON.parse(window.localStorage.getItem(ROOMS_KEY + cfg.appID) || '[]');
    return Array.isArray(list) ? list.filter(function (n) { return typeof n === 'string' && n; }) : [];
  } catch (err) {
    return [];
  }
}

function storeRooms() {
  try {
    window.localStorage.setItem(ROOMS_KEY + cfg.appID, JSON.stringify(namedRooms()));
  } catch (err) { /* storage disabled: the rooms last as long as the page */ }
}

function namedRooms() {
  return Array.from(rooms.keys()).filter(function (n) { return n !== '' && !rooms.get(n).partner; });
}

// ---------------------------------------------------------------- private conversations

function conversationKey(user) {
  return CONVERSATION + user;
}

function conversations() {
  return Array.from(rooms.values()).filter(function (r) { return r.partner; });
}

function storedConversations() {
  try {
    var list = JSON.parse(window.localStorage.getItem(CONVERSATIONS_KEY + cfg.appID + '.' + myName) || '[]');
    return Array.isArray(list) ? list.filter(function (c) {
      return c && typeof c.user === 'string' && c.user && c.user !== myName;
    }) : [];
  } catch (err) {
    return [];
  }
}

function storeConversations() {
  try {
    window.localStorage.setItem(CONVERSATIONS_KEY + cfg.appID + '.' + myName, JSON.stringify(
      conversations().map(function (r) { return { user: r.partner, unread: r.unread }; })));
  } catch (err) { /* storage disabled: the conversations last as long as the page */ }
}

/** The inbox place up to which this browser has shown private messages (any of its pages). */
function seenMark() {
  try {
    var mark = JSON.parse(window.localStorage.getItem(SEEN_KEY + cfg.appID + '.' + myName) || 'null');
    return mark && typeof mark.epoch === 'string' && typeof mark.offset === 'number' ? mark : null;
  } catch (err) {
    return null;
  }
}

function seenBefore(data) {
  var mark = seenMark();
  return Boolean(mark) && typeof data.offset === 'number' && data.epoch === mark.epoch
    && data.offset <= mark.offset;
}

function markSeen(data) {
  if (typeof data.offset !== 'number' || typeof data.epoch !== 'string' || !data.epoch) return;
  var mark = seenMark();
  if (mark && mark.epoch === data.epoch && mark.offset >= data.offset) return;
  try {
    window.localStorage.setItem(SEEN_KEY + cfg.appID + '.' + myName,
      JSON.stringify({ epoch: data.epoch, offset: data.offset }));
  } catch (err) { /* storage disabled */ }
}

/** The conversation with ``user`` in the room list (made when new). */
function addConversation(user, unread) {
  var key = conversationKey(user);
  var existing = rooms.get(key);
  if (existing) return existing;
  var view = document.createElement('ol');
  view.className = 'messages';
  view.hidden = true;
  view.setAttribute('aria-live', 'polite');
  view.setAttribute('data-conversation', user);
  view.addEventListener('click', function () { setDrawer(false); });
  els.views.appendChild(view);
  var room = makeRoom(key, view, user);
  room.unread = unread > 0 ? Math.floor(unread) : 0;
  conversationEntry(room);
  renderUnread(room);
  return room;
}

/** The room list entry of a conversation: a button to show it, its unread badge, a close button. */
function conversationEntry(room) {
  var item = document.createElement('span');
  item.className = 'named-room conversation';
  item.setAttribute('data-testid', 'conversation');
  item.setAttribute('data-user', room.partner);
  var open = document.createElement('button');
  open.type = 'button';
  open.className = 'room-open';
  open.title = 'Private conversation with ' + room.partner;
  var label = document.createElement('span');
  label.className = 'room-label';
  label.textContent = room.partner;
  open.appendChild(label);
  var badge = unreadBadge();
  open.appendChild(badge);
  open.addEventListener('click', function () { showRoom(room.name); });
  var close = document.createElement('button');
  close.type = 'button';
  close.className = 'room-leave';
  close.setAttribute('data-testid', 'conversation-close');
  close.setAttribute('aria-label', 'Close the conversation with ' + room.partner);
  close.textContent = '×';
  close.addEventListener('click', function () { dropRoom(room.name); });
  item.appendChild(open);
  item.appendChild(close);
  room.entry = item;
  room.badge = badge;
  els.conversations.appendChild(item);
}

/** A click on a user of the online list: the private conversation with them, shown. */
function openConversation(user) {
  if (!user || user === myName) return;
  var room = addConversation(user);
  storeConversations();
  setDrawer(false);
  showRoom(room.name);
  els.input.focus();
}

/** The conversations of the user now logged in (after a name change: theirs, not the old name's). */
function restoreConversations() {
  conversations().forEach(function (room) { removeRoom(room); });
  storedConversations().forEach(function (c) { addConversation(c.user, c.unread); });
}

/** The partner of a message of the user's inbox ('' when it is not between two users). */
function partnerOf(data) {
  var from = data.from === undefined || data.from === null ? '' : String(data.from);
  var target = data.target === undefined || data.target === null ? '' : String(data.target);
  if (from !== '' && from === myName) return target;
  return target === myName ? from : '';
}

/** Why a typed room name cannot be used ('' when it can). */
function roomProblem(name) {
  if (!name) return 'Type a room name.';
  if (name.length > ROOM_MAX_CHARS) return 'A room name is at most ' + ROOM_MAX_CHARS + ' characters.';
  if (NOT_IN_ROOMS.test(name)) return 'A room name cannot hold control characters.';
  return '';
}

/** The room list entry of a named room: a button to show it, its unread badge, a leave button. */
function roomEntry(room) {
  var item = document.createElement('span');
  item.className = 'named-room';
  item.setAttribute('data-testid', 'named-room');
  item.setAttribute('data-room', room.name);
  var open = document.createElement('button');
  open.type = 'button';
  open.className = 'room-open';
  open.title = room.name;
  var label = document.createElement('span');
  label.className = 'room-label';
  label.textContent = room.name;
  open.appendChild(label);
  var badge = unreadBadge();
  open.appendChild(badge);
  open.addEventListener('click', function () { showRoom(room.name); });
  var leave = document.createElement('button');
  leave.type = 'button';
  leave.className = 'room-leave';
  leave.setAttribute('data-testid', 'room-leave');
  leave.setAttribute('aria-label', 'Leave ' + room.name);
  leave.textContent = '×';
  leave.addEventListener('click', function () { leaveRoom(room.name); });
  item.appendChild(open);
  item.appendChild(leave);
  room.entry = item;
  room.badge = badge;
  els.namedRooms.appendChild(item);
}

function unreadBadge() {
  var badge = document.createElement('span');
  badge.className = 'unread';
  badge.setAttribute('data-testid', 'unread');
  badge.hidden = true;
  return badge;
}

function renderUnread(room) {
  if (room.partner) storeConversations();
  if (!room.badge) return;
  room.badge.hidden = room.unread === 0;
  room.badge.textContent = room.unread ? String(room.unread) : '';
  room.badge.setAttribute('aria-label', room.unread + ' unread');
}

/** Add a named room to the page (not yet joined). */
function addRoom(name) {
  var existing = rooms.get(name);
  if (existing) return existing;
  var view = document.createElement('ol');
  view.className = 'messages';
  view.hidden = true;
  view.setAttribute('aria-live', 'polite');
  view.setAttribute('data-room', name);
  view.addEventListener('click', function () { setDrawer(false); });
  els.views.appendChild(view);
  var room = makeRoom(name, view);
  roomEntry(room);
  return room;
}

/** Show one room: its messages, its online list; its unread count is read. */
function showRoom(name) {
  var room = rooms.get(name);
  if (!room) return;
  shown = name;
  rooms.forEach(function (r) {
    var on = r === room;
    r.view.hidden = !on;
    if (on) r.view.setAttribute('data-testid', 'messages');
    else r.view.removeAttribute('data-testid');
    if (r.entry) {
      r.entry.classList.toggle('shown', on);
      r.entry.querySelector('.room-open').setAttribute('aria-pressed', on ? 'true' : 'false');
    }
  });
  if (els.appRoomLink) els.appRoomLink.classList.toggle('shown', name === '');
  els.roomName.textContent = room.partner ? ' › ' + room.partner + ' (private)' : name ? ' › ' + name : '';
  els.input.placeholder = room.partner ? 'Message to ' + room.partner + '…' : 'Type a message…';
  document.title = (hiddenUnread ? '(' + hiddenUnread + ') ' : '') + baseTitle;
  room.unread = 0;
  renderUnread(room);
  renderEarlier();
  renderOnline();
  updatePolling();
  room.view.scrollTop = room.view.scrollHeight;
  if (client && client.state === 'online') {
    if (!room.loaded) loadHistory(room);
    refreshOnline(listRoom());
  }
}

/** The room whose online list the sidebar shows: a conversation shows the app room's. */
function listRoom() {
  var room = rooms.get(shown) || rooms.get('');
  return room.partner ? rooms.get('') : room;
}

function joinRoom(name) {
  var room = addRoom(name);
  storeRooms();
  if (!client) return room;   // the client, once made, joins it
  client.join(name).then(function () {
    room.online.add(myName);
    if (shown === name) renderOnline();
  }, function (err) {
    notice('Could not join room "' + name + '": ' + errorText(err) + '.', 'error', '');
    dropRoom(name);
  });
  return room;
}

function leaveRoom(name) {
  if (!rooms.has(name)) return;
  client.leave(name).catch(function (err) {
    notice('Could not leave room "' + name + '": ' + errorText(err) + '.', 'error', '');
  });
  dropRoom(name);
}

function dropRoom(name) {
  var room = rooms.get(name);
  if (!room || name === '') return;
  removeRoom(room);
  if (room.partner) storeConversations(); else storeRooms();
}

function removeRoom(room) {
  rooms.delete(room.name);
  if (room.entry && room.entry.parentNode) room.entry.parentNode.removeChild(room.entry);
  if (room.view.parentNode) room.view.parentNode.removeChild(room.view);
  if (shown === room.name) showRoom('');
}

function openRoomForm() {
  els.roomForm.hidden = false;
  els.roomAdd.setAttribute('aria-expanded', 'true');
  els.roomHint.textContent = '';
  els.roomInput.value = '';
  els.roomInput.focus();
}

function closeRoomForm() {
  els.roomForm.hidden = true;
  els.roomAdd.setAttribute('aria-expanded', 'false');
  els.roomHint.textContent = '';
}

els.roomInput.maxLength = ROOM_MAX_CHARS;
els.roomAdd.addEventListener('click', function () {
  if (els.roomForm.hidden) openRoomForm(); else closeRoomForm();
});
els.roomCancel.addEventListener('click', closeRoomForm);
els.roomForm.addEventListener('keydown', function (event) {
  if (event.key === 'Escape') closeRoomForm();
});
els.roomForm.addEventListener('submit', function (event) {
  event.preventDefault();
  var name = els.roomInput.value.trim();
  var problem = roomProblem(name);
  if (problem) {
    els.roomHint.textContent = problem;
    return;
  }
  closeRoomForm();
  if (!rooms.has(name)) joinRoom(name);
  showRoom(name);
});

// The current app room's link shows its room without loading the page again.
if (els.appRoomLink) {
  rooms.get('').badge = unreadBadge();
  els.appRoomLink.appendChild(rooms.get('').badge);
  els.appRoomLink.addEventListener('click', function (event) {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    showRoom('');
  });
}

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

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

/** Put a line at the end of a room's list (the shown room's when none is named). */
function append(node, forceScroll, roomName) {
  var room = rooms.get(roomName === undefined ? shown : roomName) || rooms.get('');
  var list = room.view;
  var stick = forceScroll || nearBottom(list);
  list.appendChild(node);
  while (list.children.length > MAX_MESSAGES) {
    forget(room, list.firstChild);
    list.removeChild(list.firstChild);
  }
  if (stick) list.scrollTop = list.scrollHeight;
}

function forget(room, node) {
  var id = node && node.getAttribute && node.getAttribute('data-msgid');
  if (id && room.byID.get(id) === node) room.byID.delete(id);
}

/** A centred line such as "alice joined". kind: "", "ok" or "error". */
function notice(text, kind, roomName) {
  var li = document.createElement('li');
  li.className = 'notice' + (kind ? ' ' + kind : '');
  li.setAttribute('data-testid', 'notice');
  li.textContent = text;
  append(li, kind === 'error', roomName);
  return li;
}

/** A chat bubble; its text is "from: msg" (the time is CSS generated content). An image
 * message of this server's uploads shows the image instead of its URL. */
function messageBubble(from, text, own, time, type) {
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
  bubble.setAttribute('data-time', clock(typeof time === 'number' && time > 0 ? new Date(time) : new Date()));

  var fromEl = document.createElement('span');
  fromEl.className = 'from';
  fromEl.style.color = colorFor(from);
  fromEl.textContent = from;

  var sep = document.createElement('span');
  sep.className = 'sep';
  sep.textContent = ': ';

  var body = document.createElement('span');
  body.className = 'text';
  if (type === 'image' && FILE_URL.test(text)) {
    var img = document.createElement('img');
    img.className = 'image';
    img.setAttribute('data-testid', 'message-image');
    img.alt = 'image from ' + from;
    img.loading = 'lazy';
    img.decoding = 'async';
    img.src = apiBase() + text;
    li.classList.add('has-image');
    body.appendChild(img);
  } else {
    body.textContent = text;   // any other type is shown as its text
  }

  bubble.appendChild(fromEl);
  bubble.appendChild(sep);
  bubble.appendChild(body);
  li.appendChild(avatar);
  li.appendChild(bubble);
  return li;
}

/** A stored or pushed message as a bubble, or null when the room shows it already. */
function bubbleFor(room, data) {
  var msgID = typeof data.msgID === 'string' ? data.msgID : '';
  if (msgID && room.byID.has(msgID)) return null;
  var from = data.from === undefined || data.from === null ? '' : String(data.from);
  var text = data.msg === undefined || data.msg === null ? '' : String(data.msg);
  var type = typeof data.type === 'string' ? data.type : 'text';
  var li = messageBubble(from || 'system', text, from !== '' && from === myName, data.time, type);
  if (msgID) {
    li.setAttribute('data-msgid', msgID);
    room.byID.set(msgID, li);
  }
  if (typeof data.offset === 'number') li.setAttribute('data-offset', String(data.offset));
  if (data.target) li.classList.add('private');
  return li;
}

/** A message that arrived (live or recovered): shown in its room, counted when unseen
 * (unless ``counted`` is false). */
function showMessage(roomName, data, counted) {
  var room = rooms.get(roomName) || rooms.get('');
  var li = bubbleFor(room, data);
  if (!li) return;
  append(li, false, room.name);
  if (counted === false) return;
  if (room.name !== shown) {
    room.unread += 1;
    renderUnread(room);
  }
  if (document.hidden) {
    hiddenUnread += 1;
    document.title = '(' + hiddenUnread + ') ' + baseTitle;
  }
}

document.addEventListener('visibilitychange', function () {
  if (!document.hidden && hiddenUnread) {
    hiddenUnread = 0;
    document.title = baseTitle;
  }
});

// ---------------------------------------------------------------- history

/**
 * Shows the room's latest messages above what it shows already (messages that arrived
 * meanwhile are newer, and a message already shown is not shown twice).
 */
function loadHistory(room) {
  if (room.loading) return;
  room.loading = true;
  var request = room.partner ? conversationPage(room) : client.history(room.name, { limit: HISTORY_PAGE });
  request.then(function (reply) {
    room.loading = false;
    room.loaded = true;
    insertOlder(room, reply.publications, reply.partner ? reply : null);
  }, function (err) {
    room.loading = false;
    if (rooms.get(room.name) !== room) return;
    if (err.code) notice('Could not load the history: ' + errorText(err) + '.', 'error', room.name);
    // Not connected: the next login loads it.
  });
}

/** The "earlier messages" button: the page of history before the oldest one shown. */
function loadEarlier() {
  var room = rooms.get(shown);
  if (!room || room.loading || !room.more) return;
  room.loading = true;
  var request = room.partner ? conversationPage(room, room.lowest)
    : client.history(room.name, { before: room.lowest, limit: HISTORY_PAGE });
  request.then(function (reply) {
    room.loading = false;
    var keep = room.view.scrollHeight - room.view.scrollTop;
    insertOlder(room, reply.publications, reply.partner ? reply : null);
    room.view.scrollTop = room.view.scrollHeight - keep;
  }, function (err) {
    room.loading = false;
    notice('Could not load earlier messages: ' + errorText(err) + '.', 'error', room.name);
  });
}

/**
 * A conversation's messages from the user's inbox: pages of it, newest first, filtered to
 * the partner, until a page's worth of them (or INBOX_PAGES requests, or the start).
 * Resolves with {partner, publications (oldest first), lowest (offset of the last page
 * read), more}.
 */
function conversationPage(room, before) {
  var found = [];
  var requests = 0;
  function step(below) {
    var page = { inbox: true, limit: INBOX_PAGE };
    if (below) page.before = below;
    return client.history(page).then(function (reply) {
      requests += 1;
      var list = reply.publications.filter(function (p) { return p && typeof p === 'object'; });
      found = list.filter(function (p) { return partnerOf(p) === room.partner; }).concat(found);
      var first = list.length && typeof list[0].offset === 'number' ? list[0].offset : 0;
      var more = list.length >= INBOX_PAGE && first > 1;
      if (!more || found.length >= HISTORY_PAGE || requests >= INBOX_PAGES) {
        return { partner: room.partner, publications: found, lowest: first, more: more };
      }
      return step(first);
    });
  }
  return step(before);
}

function insertOlder(room, publications, page) {
  var list = Array.isArray(publications) ? publications : [];
  var fragment = document.createDocumentFragment();
  list.forEach(function (data) {
    if (!data || typeof data !== 'object') return;
    var li = bubbleFor(room, data);
    if (li) fragment.appendChild(li);
  });
  if (page) {
    // a conversation: where the inbox was read to, not its first message
    if (page.lowest) room.lowest = room.lowest ? Math.min(room.lowest, page.lowest) : page.lowest;
    room.more = page.more;
  } else {
    var first = list.length && typeof list[0].offset === 'number' ? list[0].offset : 0;
    if (first) room.lowest = room.lowest ? Math.min(room.lowest, first) : first;
    room.more = list.length >= HISTORY_PAGE && room.lowest > 1;
  }
  room.view.insertBefore(fragment, room.view.firstChild);
  if (room.name === shown) {
    room.view.scrollTop = room.view.scrollHeight;
    renderEarlier();
  }
}

function renderEarlier() {
  var room = rooms.get(shown);
  els.earlier.hidden = !(room && room.more);
}

/**
 * What the room missed cannot be replayed (the server restarted, or too much was
 * missed): show its latest messages again, from scratch, keeping the page's own
 * messages that still wait to be sent.
 */
function reloadHistory(room) {
  Array.from(room.view.children).forEach(function (li) {
    var id = li.getAttribute('data-msgid');
    if (id && outbox.has(id)) return;
    forget(room, li);
    room.view.removeChild(li);
  });
  room.byID.clear();
  outbox.forEach(function (entry, id) {
    if (entry.room === room.name) room.byID.set(id, entry.bubble);
  });
  room.loaded = false;
  room.lowest = 0;
  room.more = false;
  notice('Reconnected. Messages sent meanwhile could not be recovered; these are the room\'s latest.', '', room.name);
  loadHistory(room);
}

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

/** The shown room's online users, in the sidebar. */
function renderOnline() {
  var room = listRoom();
  var names = Array.from(room.online);
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
    if (name === myName) {
      li.appendChild(avatar);
      li.appendChild(label);
    } else {
      // A click opens a private conversation with the user.
      var open = document.createElement('button');
      open.type = 'button';
      open.className = 'online-open';
      open.setAttribute('data-testid', 'online-open');
      open.title = 'Private message to ' + name;
      open.appendChild(avatar);
      open.appendChild(label);
      open.addEventListener('click', function () { openConversation(name); });
      li.appendChild(open);
    }
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
  els.onlineList.classList.toggle('stale', !isOnline());
  els.onlineCount.textContent = String(names.length);
  els.onlineCountShort.textContent = String(names.length);
}

function isOnline() {
  return Boolean(client) && client.state === 'online';
}

/** Presence events are off for the shown room: read the list every 30 s instead. */
function presenceEventsOff() {
  var room = listRoom();
  return cfg.presenceMaxRoom === 0 || room.online.size > cfg.presenceMaxRoom;
}

var pollTimer = null;

function updatePolling() {
  var poll = isOnline() && presenceEventsOff();
  if (poll && !pollTimer) {
    pollTimer = setInterval(function () { refreshOnline(listRoom()); }, LIST_POLL_MS);
  } else if (!poll && pollTimer) {
    clearInterval(pollTimer);
    pollTimer = null;
  }
  els.onlineNote.textContent = poll ? 'Large room: the list refreshes every 30 s.' : '';
}

function refreshOnline(room) {
  var id = ++room.fetchID;
  room.eventsDuringFetch = [];
  var request = room.name === '' ? api('GET', '/user/list', { appID: cfg.appID })
    : api('GET', '/room/users', { appID: cfg.appID, room: room.name });
  return request.then(function (data) {
    if (id !== room.fetchID) return;
    var names = Array.isArray(data.userList) ? data.userList : [];
    var next = new Set(names.map(String));
    (room.eventsDuringFetch || []).forEach(function (event) {
      if (event.enter) next.add(event.name); else next.delete(event.name);
    });
    room.eventsDuringFetch = null;
    if (isOnline()) next.add(myName);
    room.online = next;
    if (room === listRoom()) {
      renderOnline();
      updatePolling();
    }
  }, function (err) {
    if (id !== room.fetchID) return;
    room.eventsDuringFetch = null;
    notice('Could not load the online list: ' + err.message, 'error', room.name);
  });
}

function presence(event) {
  var room = rooms.get(event.room);
  if (!room) return;
  var name = event.user;
  var enter = event.kind === 'enter';
  if (room.eventsDuringFetch) room.eventsDuringFetch.push({ enter: enter, name: name });
  // Our own name: an older connection of ours; this one is still here.
  if (name === myName) return;
  if (enter) room.online.add(name); else room.online.delete(name);
  if (room === listRoom()) renderOnline();
  notice(name + (enter ? ' joined' : ' left'), '', room.name);
  if (room === listRoom()) updatePolling();
}

// ---------------------------------------------------------------- the connection

var countdownTimer = null;

/** "invalid parameters (1001)", or the server's detail with its code. */
function errorText(err) {
  if (err && err.detail) return err.detail + ' (' + err.code + ')';
  if (err && err.code) return codeText(err.code);
  return (err && err.message) || NOT_CONNECTED;
}

function connectionState(event) {
  clearInterval(countdownTimer);
  countdownTimer = null;
  if (event.state === 'connecting') {
    var again = everOnline || event.attempt > 0;
    setStatus(again ? 'reconnecting' : 'connecting', again ? 'Reconnecting…' : 'Connecting…');
  } else if (event.state === 'online') {
    loggedIn();
  } else if (event.state === 'offline') {
    loggedOut(event);
  }
}

function loggedIn() {
  everOnline = true;
  hideBanner();
  setStatus('online', 'Online');
  notice('You are connected as ' + myName, 'ok');
  rooms.forEach(function (room) {
    room.online.add(myName);
  });
  renderOnline();
  var room = rooms.get(shown);
  refreshOnline(rooms.get(''));
  if (listRoom() !== rooms.get('')) refreshOnline(listRoom());
  if (!room.loaded) loadHistory(room);
  renderSends();
}

function loggedOut(event) {
  rooms.forEach(function (room) { room.online.delete(myName); });
  renderOnline();
  updatePolling();
  var code = event.code;
  if (event.why === 'closed' || event.why === 'replaced') {
    if ((code >= 4000 && code < 5000) || event.reason) {
      notice('Disconnected by the server: ' + (event.reason || 'no reason given') + ' (code ' + code + ')', 'error');
    } else {
      notice('Connection lost (code ' + code + ')', 'error');
    }
  } else if (event.why === 'login') {
    notice('Login failed: ' + codeText(code) + ': the server refused the login.', 'error');
  } else if (event.why === 'error' && event.reason) {
    notice('Connection lost: ' + event.reason, 'error');
  }
  if (event.why === 'refused') {
    loginRefused(event);
  } else if (event.why === 'replaced') {
    setStatus('offline', 'Offline');
    showBanner('This name logged in somewhere else, so this page was disconnected: ' + (event.reason || code) + '.', {
      label: 'Reconnect',
      run: function () { hideBanner(); client.connect(); }
    });
  } else if (event.retryAt) {
    var tick = function () {
      var left = Math.max(0, Math.ceil((event.retryAt - Date.now()) / 1000));
      setStatus('reconnecting', left > 0 ? 'Reconnecting in ' + left + ' s…' : 'Reconnecting…');
    };
    tick();
    countdownTimer = setInterval(tick, 1000);
  } else {
    setStatus('offline', 'Offline');
  }
}

function loginRefused(event) {
  var code = event.code;
  var expired = code === CODES.UNAUTHORIZED && tokenExpired();
  var what = code === CODES.INVALID_USER_ID ? 'the name "' + myName + '" was refused'
    : expired ? 'this page\'s sign-in has expired, reload the page'
      : code === CODES.UNAUTHORIZED ? 'room ' + cfg.appID + ' is not open' + (cfg.token ? ' or the sign-in was refused' : '')
        : 'the server refused the login';
  var text = 'Login failed: ' + codeText(code) + ': ' + what + '.';
  // Trying again would fail the same way: the client stopped. Another name comes from
  // the name form; a fresh token with a reload.
  var rename = code === CODES.INVALID_USER_ID;
  setStatus('error', 'Login failed');
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
      client.connect();
    }
  });
  notice(text, 'error');
}

/** After a reconnect: what a room missed was given again, or cannot be. */
function recovered(event) {
  var room = rooms.get(event.room);
  if (!room || !event.count) return;
  notice(event.count + (event.count === 1 ? ' message' : ' messages') + ' while you were away', 'ok', room.name);
}

function recoveryFailed(event) {
  var room = rooms.get(event.room);
  if (room) reloadHistory(room);
}

var OWN_REQUESTS = { join: true, leave: true, publish: true, history: true, send: true, ack: true };

/**
 * A private message (live, or one that waited in the inbox): shown in the conversation
 * with its partner, which joins the room list when new; counted as unread unless it is
 * the user's own (sent from another device) or a page of this browser showed it before.
 * Then acknowledged, so that this device is not given it again.
 */
function privateMessage(event) {
  var data = event.message;
  var partner = event.partner;
  var key = '';
  if (partner && partner !== myName) key = addConversation(partner).name;
  var counted = !event.own && !seenBefore(data);
  showMessage(key, data, counted);
  if (key && !counted) storeConversations();
  markSeen(data);
  client.ack();
}

function startClient(deviceID) {
  client = new IMClient({
    url: wsEndpoint(),
    appID: cfg.appID,
    userID: myName,
    serviceToken: cfg.token,
    deviceID: deviceID,
    uploadUrl: apiBase() + '/upload',
    heartbeatInterval: cfg.heartbeatInterval
  });
  client.on('state', connectionState);
  client.on('message', function (event) {
    // A named room the page has left may still have a message on its way: not shown.
    if (event.room && !rooms.has(event.room)) return;
    showMessage(event.room, event.message);
  });
  client.on('private', privateMessage);
  client.on('presence', presence);
  client.on('recovered', recovered);
  client.on('recoveryfailed', recoveryFailed);
  client.on('send', sendStatus);
  client.on('error', function (event) {
    // Errors of the page's requests are shown where they were made; this is the server
    // speaking on its own.
    if (!OWN_REQUESTS[event.cmd]) notice('Server: ' + errorText(event), 'error');
  });
  namedRooms().forEach(function (name) { joinRoom(name); });
  client.connect();
}

// ---------------------------------------------------------------- sending

// A message is shown at once, greyed out until the server has taken it. The client
// keeps what waits, in order, each with the msgID it got when typed, so that sending
// it again after a reconnect is harmless (the server takes a msgID once).
var NOTE_WAITING = 'waiting for the connection';
var NOTE_RETRY = 'not sent yet, will retry';

var outbox = new Map();       // msgID -> {text, room, bubble, attempts, waiting}
var failedBatch = null;       // sends that failed together, shown as one notice

function sendMessage() {
  var text = els.input.value.replace(/^\s+|\s+$/g, '');
  if (!text) {
    els.input.value = '';
    els.input.focus();
    return;
  }
  if (!client || client.stopped) {
    // The page has given up reconnecting: nothing would ever send it. The text stays.
    notice('Message not sent: ' + NOT_CONNECTED, 'error');
    return;
  }
  els.input.value = '';
  els.input.focus();
  updateCounter();
  sendLine(rooms.get(shown), text, 'text');
}

/** Send a line to a room or, in a conversation, to its partner; shown at once, pending. */
function sendLine(room, text, type) {
  var sent = room.partner ? client.send(room.partner, text, { type: type })
    : client.publish(room.name, text, { type: type });
  // The server does not echo a message to its sender: show it ourselves.
  var bubble = messageBubble(myName, text, true, undefined, type);
  bubble.classList.add('pending');
  if (room.partner) bubble.classList.add('private');
  bubble.setAttribute('aria-busy', 'true');
  bubble.setAttribute('data-msgid', sent.msgID);
  room.byID.set(sent.msgID, bubble);
  outbox.set(sent.msgID, { text: type === 'text' ? text : '', room: room.name, bubble: bubble,
    attempts: 0, waiting: !isOnline() });
  append(bubble, true, room.name);
  renderSends();
}

// ---------------------------------------------------------------- images

/** The attach button: choose an image, upload it, send its URL as an "image" message. */
function attachImage(file) {
  var room = rooms.get(shown);
  if (!client || client.stopped) {
    notice('Image not sent: ' + NOT_CONNECTED, 'error');
    return;
  }
  els.attach.setAttribute('aria-busy', 'true');
  els.attach.disabled = true;
  client.upload(file).then(function (url) {
    if (rooms.get(room.name) !== room) {
      notice('Image not sent: the conversation was closed.', 'error');
      return;
    }
    sendLine(room, url, 'image');
  }, function (err) {
    notice('Image not sent: ' + errorText(err) + '.', 'error', room.name);
  }).then(function () {
    els.attach.removeAttribute('aria-busy');
    els.attach.disabled = false;
  });
}

els.attach.addEventListener('click', function () { els.fileInput.click(); });
els.fileInput.addEventListener('change', function () {
  var file = els.fileInput.files && els.fileInput.files[0];
  els.fileInput.value = '';
  if (file) attachImage(file);
});

function sendStatus(event) {
  var entry = outbox.get(event.msgID);
  if (!entry) return;
  if (event.status === 'pending') {
    entry.attempts = event.attempts;
    entry.waiting = event.waiting;
    renderSend(entry);
  } else if (event.status === 'sent') {
    outbox.delete(event.msgID);
    entry.bubble.classList.remove('pending');
    entry.bubble.removeAttribute('aria-busy');
    if (typeof event.offset === 'number') entry.bubble.setAttribute('data-offset', String(event.offset));
    setNote(entry.bubble, '');
  } else if (event.status === 'failed') {
    outbox.delete(event.msgID);
    var reason = event.code ? errorText(event) : (event.detail || NOT_CONNECTED);
    if (!failedBatch) {
      failedBatch = [];
      queueMicrotask(function () {
        var batch = failedBatch;
        failedBatch = null;
        var byReason = new Map();
        batch.forEach(function (item) {
          if (!byReason.has(item.reason)) byReason.set(item.reason, []);
          byReason.get(item.reason).push(item.entry);
        });
        byReason.forEach(function (entries, why) { notSent(entries, why); });
      });
    }
    failedBatch.push({ entry: entry, reason: reason });
  }
}

/** Each waiting bubble says why it waits; one on its way says nothing. */
function renderSend(entry) {
  setNote(entry.bubble, !entry.waiting && isOnline() ? '' : entry.attempts > 0 ? NOTE_RETRY : NOTE_WAITING);
}

function renderSends() {
  outbox.forEach(function (entry) {
    if (isOnline() && entry.waiting && entry.attempts === 0) entry.waiting = false;
    renderSend(entry);
  });
}

/**
 * The small line in an own bubble that says how it stands ('' removes it).
 * CSS shows data-note, so that the message's text stays "from: msg"; the
 * label is for screen readers, the title a tooltip.
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
    var room = rooms.get(entry.room);
    if (room) forget(room, entry.bubble);
    if (entry.bubble.parentNode) entry.bubble.parentNode.removeChild(entry.bubble);
    return entry.text;
  }).filter(function (text) { return text; });   // an image's URL is not given back
  var what = texts.length === 1 ? 'Message not sent: ' : texts.length + ' messages not sent: ';
  notice(what + reason, 'error', rooms.has(entries[0].room) ? entries[0].room : '');
  if (!els.input.value) els.input.value = texts.join(' ');
  updateCounter();
}

els.composer.addEventListener('submit', function (event) {
  event.preventDefault();
  sendMessage();
});
els.earlier.addEventListener('click', loadEarlier);

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
  rooms.forEach(function (room) { room.online.delete(myName); });
  myName = name;
  cfg.token = token;
  storeName(name);
  showName();
  restoreConversations();   // the conversations are the new name's
  renderOnline();
  hideBanner();
  client.setUser({ userID: name, serviceToken: token });
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
  if (!problem && rooms.get('').online.has(cfg.guestPrefix + typed)) {
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
els.appView.addEventListener('click', function () { setDrawer(false); });
document.addEventListener('keydown', function (event) {
  if (event.key === 'Escape') setDrawer(false);
});

// ---------------------------------------------------------------- page life

// Closing the socket as the page goes lets the server send "left" at once.
window.addEventListener('pagehide', function () {
  if (client && !client.stopped) client.close();
});
window.addEventListener('pageshow', function (event) {
  if (event.persisted && client && client.stopped) client.connect();
});

// ---------------------------------------------------------------- start

if (cfg.roomNotFound) {
  notice('There is no room "' + cfg.roomNotFound + '" here: this is room ' + cfg.appID + '.', 'error');
  // The address bar names the room the page shows, so a reload or a bookmark is right.
  try {
    history.replaceState(null, '', location.pathname + '?appID=' + cfg.appID + location.hash);
  } catch (err) { /* an old browser: the address stays as typed */ }
}

storedRooms().forEach(function (name) { if (!roomProblem(name)) addRoom(name); });
showRoom('');

/** The name is known: its conversations, this page's device, the connection. */
function begin() {
  restoreConversations();
  claimDeviceID().then(function (id) { startClient(id); }, function () { startClient(); });
}

var kept = storedName();
if (kept && kept !== myName) {
  // This browser's name from an earlier page: the server checks it and mints its token.
  api('GET', '/home/token', { appID: cfg.appID, name: kept }).then(function (data) {
    myName = String(data.userID);
    cfg.token = String(data.token || '');
    storeName(myName);
    showName();
    begin();
  }, function (err) {
    if (!err.network) {
      storeName(myName);
      notice('Your name "' + kept + '" cannot be used here (' + err.message + '); you are ' + myName + ' now.', 'error');
    } else {
      notice('Could not keep your name "' + kept + '": ' + err.message + '.', 'error');
    }
    begin();
  });
} else {
  storeName(myName);
  begin();
}
