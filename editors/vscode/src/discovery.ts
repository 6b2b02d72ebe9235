/**
 * Finding the `hrm-lsp` executable, without VS Code: the order is
 * 1. the `hrmLsp.server.path` setting (an explicit path is never second-guessed: if it is
 *    wrong the user hears about it instead of silently getting another install),
 * 2. the active Python environment (the interpreter chosen in the Python extension, or an
 *    activated virtualenv/conda environment VS Code was started from),
 * 3. `PATH`.
 * When nothing is found the result carries the exact command that installs the server
 * into the environment we looked at first.
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** The hrm-lsp Python package name, as `pip install` spells it. */
export const PACKAGE_NAME = "hrm-lsp";
/** The console script the package installs. */
export const EXECUTABLE = "hrm-lsp";

/** `process.platform` values; only "win32" changes the rules. */
export type Platform = string;

export interface DiscoveryInput {
  /** `hrmLsp.server.path`; empty or undefined when unset. `~` is expanded with `home`. */
  configuredPath?: string | undefined;
  /** Python interpreters of the active environment(s), best first. */
  pythonInterpreters?: readonly string[];
  /** Environment prefixes from `VIRTUAL_ENV` / `CONDA_PREFIX`, best first. */
  environmentPrefixes?: readonly string[];
  /** The `PATH` value to search. */
  envPath?: string | undefined;
  /** Windows `PATHEXT`; ignored elsewhere. */
  pathExt?: string | undefined;
  platform: Platform;
  home?: string | undefined;
}

/** The one file-system question discovery asks; injected so tests use real temp dirs. */
export type IsExecutable = (file: string) => boolean;

/** The real check: a regular file we may execute (on Windows: that exists). */
export const isExecutableFile: IsExecutable = (file) => {
  try {
    if (!fs.statSync(file).isFile()) {
      return false;
    }
    fs.accessSync(file, process.platform === "win32" ? fs.constants.F_OK : fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

export type ExecutableSource = "setting" | "python" | "path";

export interface Found {
  readonly ok: true;
  readonly command: string;
  readonly source: ExecutableSource;
}

export interface NotFound {
  readonly ok: false;
  /** One-paragraph message for `showErrorMessage`, including `installCommand`. */
  readonly message: string;
  /** A shell command that installs hrm-lsp, e.g. `"/venv/bin/python" -m pip install hrm-lsp`. */
  readonly installCommand: string;
  /** Every file we checked, in order (for the output channel). */
  readonly searched: readonly string[];
}

export type Discovery = Found | NotFound;

function pathApi(platform: Platform): path.PlatformPath {
  return platform === "win32" ? path.win32 : path.posix;
}

function expandHome(p: string, home: string | undefined): string {
  if (home && (p === "~" || p.startsWith("~/") || p.startsWith("~\\"))) {
    return home + p.slice(1);
  }
  return p;
}

/** File names the console script can have on this platform (`hrm-lsp.exe` etc. on Windows). */
export function executableNames(platform: Platform, pathExt?: string): string[] {
  if (platform !== "win32") {
    return [EXECUTABLE];
  }
  // pip writes `hrm-lsp.exe`; honour PATHEXT for wrappers users put on PATH themselves.
  const exts = (pathExt ?? ".COM;.EXE;.BAT;.CMD")
    .split(";")
    .map((e) => e.trim().toLowerCase())
    .filter((e) => e.length > 0);
  const ordered = [".exe", ...exts.filter((e) => e !== ".exe")];
  return ordered.map((e) => EXECUTABLE + e);
}

/** Directories where an environment keeps its console scripts, given its interpreter. */
export function scriptDirsForInterpreter(interpreter: string, platform: Platform): string[] {
  const p = pathApi(platform);
  const dir = p.dirname(interpreter);
  if (platform === "win32") {
    // venv: <env>\Scripts\python.exe; conda/base installs: <env>\python.exe + <env>\Scripts.
    return p.basename(dir).toLowerCase() === "scripts" ? [dir] : [dir, p.join(dir, "Scripts")];
  }
  return [dir];
}

/** Directories where an environment keeps its console scripts, given its prefix. */
export function scriptDirsForPrefix(prefix: string, platform: Platform): string[] {
  const p = pathApi(platform);
  return platform === "win32" ? [p.join(prefix, "Scripts")] : [p.join(prefix, "bin")];
}

/** Quote a path for a shell command line when it needs it. */
export function shellQuote(arg: string, platform: Platform): string {
  if (/^[\w@%+=:,./\\-]+$/.test(arg)) {
    return arg;
  }
  if (platform === "win32") {
    return `"${arg.replace(/"/g, '""')}"`;
  }
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The command that installs hrm-lsp into `interpreter`'s environment (or a default Python). */
export function installCommand(interpreter: string | undefined, platform: Platform): string {
  const python = interpreter ?? (platform === "win32" ? "py" : "python3");
  return `${shellQuote(python, platform)} -m pip install ${PACKAGE_NAME}`;
}

/** Find the server executable; see the module comment for the order. */
export function discoverExecutable(input: DiscoveryInput, isExecutable: IsExecutable): Discovery {
  const p = pathApi(input.platform);
  const names = executableNames(input.platform, input.pathExt);
  const interpreters = (input.pythonInterpreters ?? []).filter((s) => s.length > 0);
  const install = installCommand(interpreters[0], input.platform);
  const searched: string[] = [];

  const configured = input.configuredPath?.trim();
  if (configured) {
    const file = expandHome(configured, input.home);
    searched.push(file);
    if (isExecutable(file)) {
      return { ok: true, command: file, source: "setting" };
    }
    return {
      ok: false,
      installCommand: install,
      searched,
      message:
        `hrm-lsp: the setting hrmLsp.server.path points to "${file}", which is not an executable file. ` +
        `Fix the setting, or clear it to use the active Python environment or PATH; ` +
        `to install the server run: ${install}`,
    };
  }

  const pythonDirs = [
    ...interpreters.flatMap((i) => scriptDirsForInterpreter(i, input.platform)),
    ...(input.environmentPrefixes ?? [])
      .filter((s) => s.length > 0)
      .flatMap((prefix) => scriptDirsForPrefix(prefix, input.platform)),
  ];
  for (const dir of pythonDirs) {
    for (const name of names) {
      const file = p.join(dir, name);
      searched.push(file);
      if (isExecutable(file)) {
        return { ok: true, command: file, source: "python" };
      }
    }
  }

  const delimiter = input.platform === "win32" ? ";" : ":";
  for (const rawDir of (input.envPath ?? "").split(delimiter)) {
    const dir = rawDir.trim().replace(/^"(.*)"$/, "$1");
    if (dir.length === 0) {
      continue;
    }
    for (const name of names) {
      const file = p.join(dir, name);
      searched.push(file);
      if (isExecutable(file)) {
        return { ok: true, command: file, source: "path" };
      }
    }
  }

  const where =
    interpreters.length > 0 ? `the active Python environment (${interpreters[0] ?? ""}) or PATH` : "PATH";
  return {
    ok: false,
    installCommand: install,
    searched,
    message:
      `hrm-lsp: the language server executable "${EXECUTABLE}" was not found in ${where}. ` +
      `Install it with: ${install} — or set hrmLsp.server.path to the executable.`,
  };
}
