// The local workspace in a browser: it polls the control API, renders one channel with its
// threads, and speaks, types commands and presses buttons as the user chosen in the switcher.
// Message text is untrusted: it reaches the page only as text nodes, never as HTML.
"use strict";

(() => {
  const POLL_MS = 500;
  const state = {user: "", channel: "", users: {}, open: new Set(), shown: new Map(), last: []};
  const poller = {busy: false, again: false, timer: 0};
  const $ = (id) => document.getElementById(id);

  async function control(path, body) {
    const init = body === undefined ? {cache: "no-store"}
      : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
    const response = await fetch(`/_control/${path}`, init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok || data.ok === false) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The little of Slack's mrkdwn the bot writes: `code`, *bold*, _italic_, <@U…>, <!date…|fallback>,
  // <url|label> and :emoji: (shown by name: these machines have no emoji font).
  const TOKEN = /`([^`\n]+)`|\*([^*\n]+)\*|\b_([^_\n]+)_\b|<([^<>\n]+)>|:([a-z][a-z0-9_+-]*):/g;
  const unescape = (text) => text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");

  function mrkdwn(text) {
    const out = document.createDocumentFragment();
    let last = 0;
    for (const match of text.matchAll(TOKEN)) {
      out.append(unescape(text.slice(last, match.index)), token(match));
      last = match.index + match[0].length;
    }
    out.append(unescape(text.slice(last)));
    return out;
  }

  function token([whole, code, bold, italic, markup, emoji]) {
    if (code !== undefined) return el("code", "", unescape(code));
    if (emoji !== undefined) return el("span", "emoji", whole);
    if (markup !== undefined) return reference(markup);
    const node = el(bold !== undefined ? "strong" : "em");
    node.append(mrkdwn(bold !== undefined ? bold : italic));
    return node;
  }

  function reference(markup) {
    const bar = markup.indexOf("|");
    const target = bar < 0 ? markup : markup.slice(0, bar);
    const label = bar < 0 ? "" : unescape(markup.slice(bar + 1));
    if (target.startsWith("@")) return el("span", "mention", `@${state.users[target.slice(1)] || label || target.slice(1)}`);
    if (target.startsWith("#")) return el("span", "mention", `#${label || target.slice(1)}`);
    if (target.startsWith("!")) return document.createTextNode(label || `@${target.slice(1).split("^")[0]}`);
    if (!/^https?:\/\//i.test(target)) return document.createTextNode(unescape(`<${markup}>`));
    const link = el("a", "", label || unescape(target));
    link.href = unescape(target);
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    return link;
  }

  const textObject = (text) => text.type === "mrkdwn" ? mrkdwn(String(text.text || ""))
    : document.createTextNode(String(text.text || ""));

  function blocks(msg) {
    const out = document.createDocumentFragment();
    for (const block of msg.blocks) {
      if (block.type === "section" || block.type === "header") {
        const node = el("div", block.type === "header" ? "section header" : "section");
        if (block.text) node.append(textObject(block.text));
        for (const field of block.fields || []) node.append("\n", textObject(field));
        out.append(node);
      } else if (block.type === "context") {
        const node = el("div", "context");
        (block.elements || []).filter((e) => e.text !== undefined)
          .forEach((e, i) => node.append(i ? "  ·  " : "", textObject(e)));
        out.append(node);
      } else if (block.type === "actions") {
        out.append(buttons(block, msg));
      } else if (block.type === "divider") {
        out.append(el("hr"));
      }
    }
    return out;
  }

  function buttons(block, msg) {
    const bar = el("div", "actions");
    for (const element of (block.elements || []).filter((e) => e.type === "button")) {
      const style = ["primary", "danger"].includes(element.style) ? element.style : "";
      const button = el("button", style, (element.text && element.text.text) || element.action_id);
      button.type = "button";
      button.dataset.actionId = element.action_id;
      button.addEventListener("click", () => act(() => control("click", {
        ts: msg.ts, channel: msg.channel, action_id: element.action_id, user: state.user})));
      bar.append(button);
    }
    return bar;
  }

  function message(msg) {
    const node = el("article", "msg");
    node.dataset.ts = msg.ts;
    node.dataset.user = msg.user;
    const meta = el("div", "meta");
    meta.append(el("span", "author", state.users[msg.user] || msg.user),
                el("time", "", new Date(parseFloat(msg.ts) * 1000).toLocaleTimeString()));
    if (msg.edits) meta.append(el("span", "edited", "(edited)"));
    if (msg.ephemeral_to) {
      node.classList.add("ephemeral");
      node.dataset.ephemeralTo = msg.ephemeral_to;
      meta.append(el("span", "only", "Only visible to you"));
    }
    const body = el("div", "text");
    body.append(msg.blocks.length ? blocks(msg) : mrkdwn(msg.text));
    node.append(meta, body);
    return node;
  }

  function entry(msg) {
    const node = el("div", "entry");
    node.dataset.ts = msg.ts;
    node.append(message(msg));
    if (!msg.replies.length) return node;
    const open = state.open.has(msg.ts);
    const count = `${msg.replies.length} ${msg.replies.length === 1 ? "reply" : "replies"}`;
    const toggle = el("button", "toggle", open ? `Hide ${count}` : count);
    toggle.type = "button";
    toggle.addEventListener("click", () => {
      if (!state.open.delete(msg.ts)) state.open.add(msg.ts);
      render(state.last);
    });
    node.append(toggle);
    if (open) {
      const thread = el("div", "thread");
      thread.append(...msg.replies.map(message));
      node.append(thread);
    }
    return node;
  }

  const visible = (msg) => !msg.ephemeral_to || msg.ephemeral_to === state.user;

  // Keyed by ts: a message whose content did not change keeps its node, an edited one is replaced where it stands.
  function render(messages) {
    state.last = messages;
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const kept = new Map();
    let cursor = list.firstChild;
    for (const msg of messages.filter(visible)) {
      const shown = {...msg, replies: msg.replies.filter(visible)};
      const sig = JSON.stringify([shown, state.open.has(msg.ts), state.user]);
      let item = state.shown.get(msg.ts);
      if (item && item.sig !== sig) {
        const fresh = entry(shown);
        if (cursor === item.node) cursor = fresh;
        item.node.replaceWith(fresh);
        item = {sig, node: fresh};
      }
      item = item || {sig, node: entry(shown)};
      if (item.node === cursor) cursor = cursor.nextSibling;
      else list.insertBefore(item.node, cursor);
      kept.set(msg.ts, item);
    }
    for (const [ts, item] of state.shown) if (!kept.has(ts)) item.node.remove();
    state.shown = kept;
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  async function poll() {
    if (poller.busy) { poller.again = true; return; }
    poller.busy = true;
    clearTimeout(poller.timer);
    const query = new URLSearchParams({channel: state.channel, user: state.user}).toString();
    try {
      const {messages} = await control(`transcript?${query}`);
      if (query === new URLSearchParams({channel: state.channel, user: state.user}).toString()) render(messages);
    } catch (error) {
      notice(`cannot read the workspace: ${error.message}`);
    } finally {
      poller.busy = false;
      poller.timer = setTimeout(poll, poller.again ? 0 : POLL_MS);
      poller.again = false;
    }
  }

  async function act(call) {
    try {
      await call();
      notice("");
      return true;
    } catch (error) {
      notice(error.message);
      return false;
    } finally {
      poll();
    }
  }

  const notice = (text) => { $("notice").textContent = text; };

  // "@orchestra" or "@bob" become mentions, as when a name is picked in Slack's composer.
  function mentions(text) {
    const ids = Object.fromEntries(Object.entries(state.users).map(([id, name]) => [name, id]));
    return text.replace(/(^|\s)@([\w.-]*[\w-])/g, (whole, space, name) => ids[name] ? `${space}<@${ids[name]}>` : whole);
  }

  async function send(event) {
    event.preventDefault();
    const input = $("text");
    const text = input.value.trim();
    if (!text) return;
    const where = state.channel === "dm" ? state.user : state.channel;  // a user id names their DM
    const sent = await act(() => text.startsWith("/")
      ? control("command", {command: text, user: state.user, channel: where})
      : control("message", {text: mentions(text), user: state.user, channel: state.channel}));
    if (sent) input.value = "";
  }

  function fill(select, options, wanted) {
    for (const [value, label] of options) {
      const option = el("option", "", label);
      option.value = value;
      option.selected = value === wanted || label.replace(/^#/, "") === wanted;
      select.append(option);
    }
    return select.value;
  }

  function switchTo(change) {
    change();
    state.shown.clear();
    $("messages").replaceChildren();
    poll();
  }

  async function start() {
    const info = await control("workspace");
    const params = new URLSearchParams(location.search);
    state.users = info.users;
    const people = Object.entries(info.users).filter(([id]) => id !== info.bot_user);
    state.user = fill($("user"), people, params.get("user"));
    const channels = [...Object.entries(info.channels).map(([id, name]) => [id, `#${name}`]), ["dm", "Direct messages"]];
    state.channel = fill($("channel"), channels, params.get("channel") || info.default_channel);
    $("user").addEventListener("change", (e) => switchTo(() => { state.user = e.target.value; }));
    $("channel").addEventListener("change", (e) => switchTo(() => { state.channel = e.target.value; state.open.clear(); }));
    $("composer").addEventListener("submit", send);
    poll();
  }

  start().catch((error) => notice(`cannot reach the local workspace: ${error.message}`));
})();
