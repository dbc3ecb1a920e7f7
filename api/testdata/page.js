// Runs the page's app.js in Node against the API at process.argv[3],
// with just enough of a DOM for it, waits until it has loaded, and
// prints what it drew as JSON: every element as {tag, attrs, text,
// children}. For api's page tests where no browser is installed
// (e2e/browser drives a real Chromium).
"use strict";
const fs = require("fs");
const vm = require("vm");

const [, , appJS, base] = process.argv;

class Node {}
class Text extends Node {
  constructor(t) { super(); this.data = t; this.parent = null; }
  get textContent() { return this.data; }
}
class Element extends Node {
  constructor(tag) {
    super();
    this.tagName = tag;
    this.attrs = {};
    this.children = [];
    this.dataset = {};
    this.parent = null;
    this.disabled = false;
  }
  setAttribute(k, v) {
    this.attrs[k] = String(v);
    if (k.startsWith("data-")) this.dataset[k.slice(5).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = String(v);
    if (k === "id") ids[v] = this;
  }
  getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; }
  adopt(cs) { return cs.map((c) => { const n = c instanceof Node ? c : new Text(String(c)); n.parent = this; return n; }); }
  append(...cs) { this.children.push(...this.adopt(cs)); }
  prepend(...cs) { this.children.unshift(...this.adopt(cs)); }
  replaceChildren(...cs) { this.children = this.adopt(cs); }
  remove() { if (this.parent) this.parent.children = this.parent.children.filter((c) => c !== this); }
  addEventListener() {}
  get textContent() { return this.children.map((c) => c.textContent).join(""); }
  set textContent(v) { this.children = this.adopt([String(v)]); }
  // Only ".class" selectors: all app.js asks for.
  querySelectorAll(sel) {
    const cls = sel.replace(/^\./, "");
    const out = [];
    const walk = (e) => {
      for (const c of e.children) {
        if (!(c instanceof Element)) continue;
        if ((c.attrs.class || "").split(/\s+/).includes(cls)) out.push(c);
        walk(c);
      }
    };
    walk(this);
    return out;
  }
}

const ids = {};
const document = {
  createElement: (t) => new Element(t),
  createElementNS: (_, t) => new Element(t),
  getElementById: (id) => ids[id] || null,
};
const main = document.createElement("main");
main.setAttribute("id", "main");
const loading = document.createElement("p");
loading.setAttribute("id", "loading");
main.append(loading);
for (const id of ["updated", "refresh"]) document.createElement("span").setAttribute("id", id);

const realFetch = globalThis.fetch;
Object.assign(globalThis, {
  Node, document,
  fetch: (path, opts) => realFetch(new URL(path, base), opts),
  setInterval: () => 0,
});
vm.runInThisContext(fs.readFileSync(appJS, "utf8"), { filename: appJS });

function dump(e) {
  if (!(e instanceof Element)) return { text: e.data };
  return { tag: e.tagName, attrs: e.attrs, text: e.textContent, children: e.children.map(dump) };
}
const deadline = Date.now() + 30000;
(function wait() {
  const failed = main.querySelectorAll(".error");
  if (main.dataset.loaded === "true" || failed.length) {
    process.stdout.write(JSON.stringify(dump(main)));
    return;
  }
  if (Date.now() > deadline) {
    console.error("the page did not load within 30s");
    process.exit(1);
  }
  setTimeout(wait, 50);
})();
