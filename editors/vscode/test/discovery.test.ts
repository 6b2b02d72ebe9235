// Executable discovery against real files in a temporary directory (no mocks of the file
// system): setting -> active Python environment -> PATH, and the install command on failure.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  discoverExecutable,
  executableNames,
  installCommand,
  isExecutableFile,
  scriptDirsForInterpreter,
  shellQuote,
} from "../src/discovery";

let root = "";

function makeFile(rel: string, mode: number): string {
  const file = path.join(root, rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, "#!/bin/sh\nexit 0\n");
  fs.chmodSync(file, mode);
  return file;
}

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "hrm-lsp-discovery-"));
});

after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

describe("discoverExecutable (POSIX, real files)", { skip: process.platform === "win32" }, () => {
  it("uses the setting first, even when the environment and PATH have one", () => {
    const configured = makeFile("custom/hrm-lsp-wrapper", 0o755);
    const venvPython = makeFile("venv/bin/python", 0o755);
    makeFile("venv/bin/hrm-lsp", 0o755);
    const onPath = makeFile("usr/bin/hrm-lsp", 0o755);
    const got = discoverExecutable(
      {
        configuredPath: configured,
        pythonInterpreters: [venvPython],
        envPath: path.dirname(onPath),
        platform: "linux",
      },
      isExecutableFile,
    );
    assert.deepEqual(got, { ok: true, command: configured, source: "setting" });
  });

  it("expands ~ in the setting", () => {
    makeFile("home/bin/hrm-lsp", 0o755);
    const got = discoverExecutable(
      { configuredPath: "~/bin/hrm-lsp", platform: "linux", home: path.join(root, "home") },
      isExecutableFile,
    );
    assert.deepEqual(got, { ok: true, command: path.join(root, "home/bin/hrm-lsp"), source: "setting" });
  });

  it("reports a wrong setting instead of falling back", () => {
    const onPath = makeFile("path1/hrm-lsp", 0o755);
    const got = discoverExecutable(
      { configuredPath: path.join(root, "nope/hrm-lsp"), envPath: path.dirname(onPath), platform: "linux" },
      isExecutableFile,
    );
    assert.equal(got.ok, false);
    assert.match(got.message, /hrmLsp\.server\.path/);
    assert.match(got.message, /nope\/hrm-lsp/);
    assert.equal(got.installCommand, "python3 -m pip install hrm-lsp");
    assert.deepEqual(got.searched, [path.join(root, "nope/hrm-lsp")]);
  });

  it("prefers the active Python environment over PATH", () => {
    const venvPython = makeFile("env2/bin/python3", 0o755);
    const script = makeFile("env2/bin/hrm-lsp", 0o755);
    const onPath = makeFile("path2/hrm-lsp", 0o755);
    const got = discoverExecutable(
      { configuredPath: "  ", pythonInterpreters: [venvPython], envPath: path.dirname(onPath), platform: "linux" },
      isExecutableFile,
    );
    assert.deepEqual(got, { ok: true, command: script, source: "python" });
  });

  it("finds an activated environment from its prefix", () => {
    const script = makeFile("env3/bin/hrm-lsp", 0o755);
    const got = discoverExecutable(
      { environmentPrefixes: [path.join(root, "env3")], envPath: "", platform: "linux" },
      isExecutableFile,
    );
    assert.deepEqual(got, { ok: true, command: script, source: "python" });
  });

  it("falls back to PATH, skipping empty entries and non-executable files", () => {
    const venvPython = makeFile("env4/bin/python", 0o755); // no hrm-lsp next to it
    makeFile("pathA/hrm-lsp", 0o644); // not executable
    fs.mkdirSync(path.join(root, "pathB/hrm-lsp"), { recursive: true }); // a directory
    const good = makeFile("pathC/hrm-lsp", 0o755);
    const envPath = ["", path.join(root, "pathA"), path.join(root, "pathB"), path.join(root, "pathC")].join(":");
    const got = discoverExecutable({ pythonInterpreters: [venvPython], envPath, platform: "linux" }, isExecutableFile);
    assert.deepEqual(got, { ok: true, command: good, source: "path" });
  });

  it("says exactly how to install into the active environment when nothing is found", () => {
    const venvPython = makeFile("env 5/bin/python", 0o755);
    const got = discoverExecutable(
      { pythonInterpreters: [venvPython], envPath: path.join(root, "empty"), platform: "linux" },
      isExecutableFile,
    );
    assert.equal(got.ok, false);
    const quoted = `'${venvPython}' -m pip install hrm-lsp`;
    assert.equal(got.installCommand, quoted);
    assert.ok(got.message.includes(quoted), got.message);
    assert.ok(got.message.includes("active Python environment"), got.message);
    assert.deepEqual(got.searched, [path.join(root, "env 5/bin/hrm-lsp"), path.join(root, "empty/hrm-lsp")]);
  });
});

describe("discoverExecutable (Windows rules, pure)", () => {
  it("looks for hrm-lsp.exe in Scripts of a venv and of a conda base", () => {
    assert.deepEqual(scriptDirsForInterpreter("C:\\proj\\.venv\\Scripts\\python.exe", "win32"), ["C:\\proj\\.venv\\Scripts"]);
    assert.deepEqual(scriptDirsForInterpreter("C:\\Miniconda3\\python.exe", "win32"), [
      "C:\\Miniconda3",
      "C:\\Miniconda3\\Scripts",
    ]);
    const exists = new Set(["C:\\Miniconda3\\Scripts\\hrm-lsp.exe"]);
    const got = discoverExecutable(
      { pythonInterpreters: ["C:\\Miniconda3\\python.exe"], envPath: "C:\\Windows", platform: "win32" },
      (f) => exists.has(f),
    );
    assert.deepEqual(got, { ok: true, command: "C:\\Miniconda3\\Scripts\\hrm-lsp.exe", source: "python" });
  });

  it("honours PATHEXT and quoted PATH entries", () => {
    assert.deepEqual(executableNames("win32", ".COM;.EXE;.CMD"), ["hrm-lsp.exe", "hrm-lsp.com", "hrm-lsp.cmd"]);
    const exists = new Set(["C:\\Program Files\\hrm\\hrm-lsp.cmd"]);
    const got = discoverExecutable(
      { envPath: 'C:\\Windows;"C:\\Program Files\\hrm"', pathExt: ".EXE;.CMD", platform: "win32" },
      (f) => exists.has(f),
    );
    assert.deepEqual(got, { ok: true, command: "C:\\Program Files\\hrm\\hrm-lsp.cmd", source: "path" });
  });

  it("quotes install commands for the platform's shell", () => {
    assert.equal(installCommand(undefined, "win32"), "py -m pip install hrm-lsp");
    assert.equal(installCommand("C:\\Program Files\\Python\\python.exe", "win32"), '"C:\\Program Files\\Python\\python.exe" -m pip install hrm-lsp');
    assert.equal(shellQuote("/it's here/python", "linux"), `'/it'\\''s here/python'`);
    assert.equal(shellQuote("/usr/bin/python3", "linux"), "/usr/bin/python3");
  });
});
