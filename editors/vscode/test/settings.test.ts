// Settings mapping: what reaches the server, and that package.json declares every setting.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { CLIENT_SETTINGS, SECTION, SERVER_SETTINGS, needsRestart, serverArgs, toServerSettings } from "../src/settings";

function reader(values: Record<string, unknown>): (key: string) => unknown {
  return (key) => values[key];
}

describe("toServerSettings", () => {
  it("sends only what the user set, with the server's camelCase keys", () => {
    const got = toServerSettings(
      reader({
        modelPath: "/models/hrgc.gguf",
        maxRefinementIterations: 3,
        refinementThreshold: 0.75,
        validators: ["syntax", "gofmt", "gofmt"],
        inlineMode: "multi",
        refine: false,
        "server.path": "/opt/hrm-lsp", // client-only: never sent
        "trace.server": "verbose",
      }),
    );
    assert.deepEqual(got.settings, {
      modelPath: "/models/hrgc.gguf",
      inlineMode: "multi",
      refine: false,
      maxRefinementIterations: 3,
      refinementThreshold: 0.75,
      validators: ["syntax", "gofmt"],
    });
    assert.deepEqual(got.warnings, []);
  });

  it("drops values of the wrong type with a warning naming the setting", () => {
    const got = toServerSettings(reader({ maxTokens: 12.5, temperature: "hot", device: "cpu", validators: ["vet", 3] }));
    assert.deepEqual(got.settings, { device: "cpu" });
    assert.equal(got.warnings.length, 3);
    assert.match(got.warnings[0] ?? "", /^hrmLsp\.maxTokens: expected integer, got 12\.5/);
    assert.match(got.warnings[1] ?? "", /^hrmLsp\.temperature: expected number/);
    assert.match(got.warnings[2] ?? "", /^hrmLsp\.validators: expected stringArray/);
  });

  it("sends null for unset keys in configuration answers, so removals reset", () => {
    const got = toServerSettings(reader({ maxTokens: 12, temperature: "hot" }), true);
    assert.equal(got.settings["maxTokens"], 12);
    assert.equal(got.settings["temperature"], null);
    assert.equal(got.settings["modelPath"], null);
    assert.deepEqual(Object.keys(got.settings).sort(), Object.keys(SERVER_SETTINGS).sort());
  });

  it("maps nothing to an empty object (JSON {} for initializationOptions)", () => {
    const got = toServerSettings(() => undefined);
    assert.equal(JSON.stringify(got.settings), "{}");
  });
});

describe("serverArgs / needsRestart", () => {
  it("builds the serve command line", () => {
    assert.deepEqual(serverArgs(reader({})), { path: "", args: ["serve"] });
    assert.deepEqual(
      serverArgs(reader({ "server.path": " /x/hrm-lsp ", "server.logFile": "/tmp/hrm.log", "server.extraArgs": ["--tcp", "", 7] })),
      { path: "/x/hrm-lsp", args: ["serve", "--log-file", "/tmp/hrm.log", "--tcp"] },
    );
  });

  it("restarts only for launch settings", () => {
    assert.equal(needsRestart((k) => k === "hrmLsp.server.path"), true);
    assert.equal(needsRestart((k) => k === "hrmLsp.server.logFile"), true);
    assert.equal(needsRestart((k) => k === "hrmLsp.maxTokens"), false);
  });
});

describe("package.json contributes", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8")) as {
    contributes: { configuration: { properties: Record<string, { type: string | string[] }> }; commands: { command: string; title: string }[] };
  };
  const props = pkg.contributes.configuration.properties;

  it("declares exactly the server's settings plus the client's", () => {
    const declared = Object.keys(props).sort();
    const expected = [...Object.keys(SERVER_SETTINGS), ...CLIENT_SETTINGS].map((k) => `${SECTION}.${k}`).sort();
    assert.deepEqual(declared, expected);
  });

  it("gives each server setting the JSON type the mapping checks", () => {
    const jsonType = { string: "string", boolean: "boolean", integer: "integer", number: "number", stringArray: "array" };
    for (const [key, kind] of Object.entries(SERVER_SETTINGS)) {
      assert.equal(props[`${SECTION}.${key}`]?.type, jsonType[kind], key);
    }
  });

  it("has the three commands", () => {
    const titles = Object.fromEntries(pkg.contributes.commands.map((c) => [c.command, c.title]));
    assert.deepEqual(titles, {
      "hrmLsp.refineFunction": "Refine this function",
      "hrmLsp.restartServer": "Restart server",
      "hrmLsp.showOutput": "Show output",
    });
  });
});
