/**
 * VS Code entry point: only wiring. Finding the executable (discovery.ts), mapping settings
 * (settings.ts) and the status bar state (status.ts) are plain modules tested without VS Code.
 */
import * as os from "node:os";
import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  State,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
  WorkDoneProgressCancelNotification,
  type LanguageClientOptions,
  type ServerOptions,
  type WorkDoneProgressBegin,
  type WorkDoneProgressReport,
  type WorkDoneProgressEnd,
} from "vscode-languageclient/node";
import { discoverExecutable, isExecutableFile } from "./discovery";
import { SECTION, needsRestart, serverArgs, toServerSettings } from "./settings";
import { INITIAL, reduce, type StatusEvent, type StatusView } from "./status";
import { REFINE_TITLE, SERVER_COMMANDS, modelStatusOf, positionArguments } from "./actions";

const CLIENT_ID = "hrmLsp";
const CLIENT_NAME = "HRGC (hrm-lsp)";

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel; // created first thing in activate()
let statusItem: vscode.StatusBarItem | undefined;
let status: StatusView = INITIAL;


function updateStatus(event: StatusEvent): void {
  status = reduce(status, event);
  if (statusItem) {
    statusItem.text = status.text;
    statusItem.tooltip = status.tooltip;
    statusItem.backgroundColor =
      status.state === "error" ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }
}

/** The value the user set (any scope), or undefined so the server's default applies. */
function userValue(cfg: vscode.WorkspaceConfiguration, key: string): unknown {
  const i = cfg.inspect(key);
  return i?.workspaceFolderValue ?? i?.workspaceValue ?? i?.globalValue;
}

function serverSettings(nullForUnset = false): Record<string, unknown> {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const mapped = toServerSettings((key) => userValue(cfg, key), nullForUnset);
  for (const w of mapped.warnings) {
    output.warn(w);
  }
  return mapped.settings;
}

/** Interpreters of the active Python environment, from the Python extension when installed. */
async function activePythonInterpreters(): Promise<string[]> {
  const found: string[] = [];
  const python = vscode.extensions.getExtension<{
    environments?: { getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } };
  }>("ms-python.python");
  if (python) {
    try {
      const api = python.isActive ? python.exports : await python.activate();
      const active = api.environments?.getActiveEnvironmentPath(vscode.window.activeTextEditor?.document.uri);
      if (active?.path) {
        found.push(active.path);
      }
    } catch (e) {
      output.warn(`could not ask the Python extension for the active environment: ${String(e)}`);
    }
  }
  const configured = vscode.workspace.getConfiguration("python").get<string>("defaultInterpreterPath");
  if (configured && configured !== "python") {
    found.push(configured);
  }
  return found;
}

/** Show begin/report/end of server progress in VS Code and feed the status bar. */
function handleProgress(c: LanguageClient, token: string | number): void {
  let resolve: (() => void) | undefined;
  let reporter: vscode.Progress<{ message?: string; increment?: number }> | undefined;
  let lastPercentage = 0;
  let ended = false; // the end may arrive before withProgress has started the task
  const disposable = c.onProgress(WorkDoneProgress.type, token, (value: WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd) => {
    if (value.kind === "begin") {
      updateStatus({ kind: "progressBegin", token, title: value.title, message: value.message });
      void vscode.window.withProgress(
        {
          location: vscode.ProgressLocation.Window,
          title: `HRGC: ${value.title}`,
          cancellable: value.cancellable === true,
        },
        (progress, cancel) =>
          new Promise<void>((done) => {
            reporter = progress;
            resolve = done;
            if (ended) {
              done();
              return;
            }
            if (value.message) {
              progress.report({ message: value.message });
            }
            cancel.onCancellationRequested(() => {
              void c.sendNotification(WorkDoneProgressCancelNotification.type, { token });
            });
          }),
      );
    } else if (value.kind === "report") {
      updateStatus({ kind: "progressReport", token, message: value.message });
      const increment = value.percentage !== undefined ? Math.max(0, value.percentage - lastPercentage) : undefined;
      lastPercentage = value.percentage ?? lastPercentage;
      reporter?.report({ ...(value.message ? { message: value.message } : {}), ...(increment !== undefined ? { increment } : {}) });
    } else {
      updateStatus({ kind: "progressEnd", token, message: value.message });
      if (value.message) {
        output.info(value.message);
      }
      ended = true;
      resolve?.();
      disposable.dispose();
    }
  });
}

async function startClient(): Promise<void> {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const launch = serverArgs((key) => cfg.get(key));
  const interpreters = await activePythonInterpreters();
  const prefixes = [process.env["VIRTUAL_ENV"], process.env["CONDA_PREFIX"]].filter(
    (p): p is string => typeof p === "string" && p.length > 0,
  );
  const found = discoverExecutable(
    {
      configuredPath: launch.path,
      pythonInterpreters: interpreters,
      environmentPrefixes: prefixes,
      envPath: process.env["PATH"],
      pathExt: process.env["PATHEXT"],
      platform: process.platform,
      home: os.homedir(),
    },
    isExecutableFile,
  );
  if (!found.ok) {
    output.error(found.message);
    output.info(`looked for hrm-lsp at:\n  ${found.searched.join("\n  ")}`);
    updateStatus({ kind: "clientError", message: "hrm-lsp not found" });
    const copy = "Copy install command";
    const pick = await vscode.window.showErrorMessage(found.message, copy, "Open settings");
    if (pick === copy) {
      await vscode.env.clipboard.writeText(found.installCommand);
    } else if (pick === "Open settings") {
      await vscode.commands.executeCommand("workbench.action.openSettings", `${SECTION}.server.path`);
    }
    return;
  }
  output.info(`starting ${found.command} ${launch.args.join(" ")} (found via ${found.source})`);

  const serverOptions: ServerOptions = { command: found.command, args: [...launch.args] };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ language: "go" }],
    initializationOptions: serverSettings(),
    outputChannel: output,
    middleware: {
      workspace: {
        // Answer `workspace/configuration` for our section with the mapped settings, so
        // client-only keys (server.path, trace) never reach the server.
        configuration: (params, token, next) => {
          if (params.items.every((item) => item.section !== SECTION)) {
            return next(params, token);
          }
          return params.items.map((item) => (item.section === SECTION ? serverSettings(true) : null));
        },
      },
    },
  };
  const c = new LanguageClient(CLIENT_ID, CLIENT_NAME, serverOptions, clientOptions);
  client = c;
  c.onDidChangeState((e) => {
    if (e.newState === State.Starting) {
      updateStatus({ kind: "starting" });
    } else if (e.newState === State.Stopped) {
      updateStatus({ kind: "stopped" });
    }
  });
  // Take over progress creation so model loading drives the status bar; the same
  // begin/report/end still shows in the window's progress area. A feature registered after
  // the built-in ones initializes after them, so this handler replaces theirs before the
  // server's first request can arrive.
  c.registerFeature({
    fillClientCapabilities: (caps) => {
      caps.window = { ...caps.window, workDoneProgress: true };
    },
    initialize: () => {
      c.onRequest(WorkDoneProgressCreateRequest.type, (params) => {
        handleProgress(c, params.token);
      });
    },
    getState: () => ({ kind: "static" }),
    clear: () => undefined,
  });
  updateStatus({ kind: "starting" });
  try {
    await c.start();
  } catch (e) {
    updateStatus({ kind: "clientError", message: String(e) });
    void vscode.window.showErrorMessage(`hrm-lsp failed to start: ${String(e)}. See "HRGC: Show output".`);
    return;
  }
  await refreshStatus(c);
}

async function restartClient(): Promise<void> {
  const old = client;
  client = undefined;
  if (old) {
    try {
      await old.stop();
    } catch (e) {
      output.warn(`stopping the server: ${String(e)}`);
    }
  }
  await startClient();
}

/** "Refine this function" at the cursor: the server computes the edit and applies it. */
async function refineFunction(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const c = client;
  if (editor?.document.languageId !== "go") {
    void vscode.window.showInformationMessage("HRGC: open a Go file and put the cursor in a function.");
    return;
  }
  if (!c?.isRunning()) {
    void vscode.window.showWarningMessage('HRGC: the server is not running; see "HRGC: Show output".');
    return;
  }
  const pos = editor.selection.active;
  // The server answers with the WorkspaceEdit and also sends it through workspace/applyEdit,
  // which the client applies; null means it did not apply here (the server says why).
  const edit: unknown = await c.sendRequest(ExecuteCommandRequest.type, {
    command: SERVER_COMMANDS.refine,
    arguments: positionArguments(editor.document.uri.toString(), pos.line, pos.character),
  });
  if (edit === null) {
    output.info(`${REFINE_TITLE}: no edit at ${editor.document.uri.fsPath}:${pos.line + 1}`);
  }
}

/** Seed the status bar from the server's status command (progress may have begun earlier). */
async function refreshStatus(c: LanguageClient): Promise<void> {
  try {
    const answer: unknown = await c.sendRequest(ExecuteCommandRequest.type, { command: SERVER_COMMANDS.status, arguments: [] });
    const model = modelStatusOf(answer);
    if (model) {
      updateStatus({ kind: "serverStatus", state: model.state, message: model.message });
    }
  } catch (e) {
    output.warn(`status command failed: ${String(e)}`);
  }
}

/** Activate: status bar, commands, then the client. */
export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel(CLIENT_NAME, { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = "hrmLsp.showOutput";
  statusItem.show();
  updateStatus({ kind: "stopped" });
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand("hrmLsp.refineFunction", refineFunction),
    vscode.commands.registerCommand("hrmLsp.restartServer", () => restartClient()),
    vscode.commands.registerCommand("hrmLsp.showOutput", () => {
      output.show(true);
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (needsRestart((key) => e.affectsConfiguration(key))) {
        void restartClient();
      } else if (e.affectsConfiguration(SECTION) && client?.isRunning()) {
        void client.sendNotification("workspace/didChangeConfiguration", { settings: { [SECTION]: serverSettings(true) } });
      }
    }),
  );
  await startClient();
}

/** Deactivate: stop the server (the client sends shutdown/exit). */
export async function deactivate(): Promise<void> {
  const c = client;
  client = undefined;
  if (c) {
    await c.stop();
  }
}
