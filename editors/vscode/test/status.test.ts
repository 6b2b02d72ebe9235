// The status bar reducer: model loading through $/progress, failures, reloads.
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";
import { INITIAL, reduce, type StatusEvent, type StatusView } from "../src/status";
import { modelStatusOf, pickRefineAction, positionArguments } from "../src/actions";

function run(events: StatusEvent[]): StatusView {
  return events.reduce(reduce, INITIAL);
}

describe("status reducer", () => {
  it("goes starting -> loading -> ready on the model's progress", () => {
    // What hrm_lsp/server/server.py sends: title "hrm-lsp", message "loading model X".
    const loading = run([{ kind: "starting" }, { kind: "progressBegin", token: "t1", title: "hrm-lsp", message: "loading model hrgc.gguf" }]);
    assert.equal(loading.state, "loading");
    assert.equal(loading.text, "$(sync~spin) HRGC: loading");
    assert.match(loading.tooltip, /loading the model — loading model hrgc\.gguf/);
    const ready = reduce(loading, { kind: "progressEnd", token: "t1", message: "model hrgc.gguf loaded" });
    assert.equal(ready.state, "ready");
    assert.equal(ready.text, "$(check) HRGC");
    assert.deepEqual(ready.loadTokens, []);
  });

  it("shows an error when the load ends with a failure message", () => {
    const v = run([
      { kind: "starting" },
      { kind: "progressBegin", token: 7, title: "Loading model" },
      { kind: "progressEnd", token: 7, message: "could not load model /x.gguf: bad magic" },
    ]);
    assert.equal(v.state, "error");
    assert.match(v.tooltip, /bad magic/);
  });

  it("ignores other progress (refining a function) and unknown tokens", () => {
    const ready = run([{ kind: "starting" }, { kind: "serverStatus", state: "ready" }]);
    const during = reduce(ready, { kind: "progressBegin", token: "r", title: "Refine this function" });
    assert.equal(reduce(ready, { kind: "progressBegin", token: "x", title: "hrm-lsp", message: "indexing" }).state, "ready");
    assert.equal(during.state, "ready");
    assert.equal(reduce(during, { kind: "progressEnd", token: "r", message: "failed" }).state, "ready");
    assert.equal(reduce(ready, { kind: "progressEnd", token: "zzz" }).state, "ready");
  });

  it("stays loading until the newest of overlapping loads ends", () => {
    const v = run([
      { kind: "progressBegin", token: "a", title: "Loading model" },
      { kind: "progressBegin", token: "b", title: "Loading model", message: "second" },
      { kind: "progressEnd", token: "a", message: "model loaded" },
    ]);
    assert.equal(v.state, "loading");
    assert.equal(v.detail, "second");
    assert.equal(reduce(v, { kind: "progressEnd", token: "b", message: "model loaded" }).state, "ready");
  });

  it("maps the server's status words and client errors", () => {
    assert.equal(run([{ kind: "serverStatus", state: "failed", message: "no file" }]).state, "error");
    assert.equal(run([{ kind: "serverStatus", state: "loading" }]).state, "loading");
    assert.equal(run([{ kind: "serverStatus", state: "weird" }]).state, "stopped");
    const e = run([{ kind: "clientError", message: "hrm-lsp not found" }]);
    assert.equal(e.text, "$(error) HRGC");
    assert.equal(reduce(e, { kind: "stopped" }).state, "stopped");
  });
});

describe("pickRefineAction", () => {
  it("finds the refine action among the server's actions", () => {
    const actions = [
      { title: "Generate from comment", kind: "refactor.rewrite" },
      { title: "Refine this function", kind: "refactor.rewrite", command: { title: "Refine this function", command: "x" } },
    ];
    assert.equal(pickRefineAction(actions), actions[1]);
    assert.equal(pickRefineAction([{ title: "Organize imports" }]), undefined);
  });
});

describe("server command helpers", () => {
  it("reads the model state out of hrm-lsp.status's answer", () => {
    assert.deepEqual(modelStatusOf({ version: "0.1", model: { state: "failed", path: "/m.gguf", message: "no file" } }), {
      state: "failed",
      message: "no file",
    });
    assert.deepEqual(modelStatusOf({ model: { state: "ready" } }), { state: "ready", message: "" });
    assert.equal(modelStatusOf(null), undefined);
    assert.equal(modelStatusOf({ model: "ready" }), undefined);
  });

  it("builds the refine command's argument", () => {
    assert.deepEqual(positionArguments("file:///a.go", 3, 4), [{ uri: "file:///a.go", line: 3, character: 4 }]);
  });
});
