-- Driver for tests/test_neovim.py: runs inside a real headless Neovim with the plugin from
-- editors/neovim on 'runtimepath', talks to a real `hrm-lsp serve`, and writes what it saw
-- as JSON to $HRM_TEST_OUT. Python makes the assertions; this file only acts and records.
--
-- Environment: HRM_TEST_OUT (result file), HRM_TEST_FILE (Go file to open),
-- HRM_TEST_SETUP (JSON: options for setup{}; HRM_TEST_SETUP2 for `resetup`), HRM_TEST_STEPS (comma list of steps),
-- HRM_TEST_COMPLETE_AT / HRM_TEST_REFINE_AT ("line,col", 1-based line, 0-based byte col),
-- HRM_TEST_TIMEOUT_MS (per wait).
local out = { steps = {}, messages = {}, errors = {} }
local timeout = tonumber(vim.env.HRM_TEST_TIMEOUT_MS or "30000")

local function decode(s)
  return vim.fn.json_decode(s)
end

local function write_out()
  local f = assert(io.open(vim.env.HRM_TEST_OUT, "w"))
  f:write(vim.fn.json_encode(out))
  f:close()
end

-- Record every window/showMessage the server sends (warnings about settings land here).
local show = vim.lsp.handlers["window/showMessage"]
vim.lsp.handlers["window/showMessage"] = function(err, result, ctx, cfg)
  if result then
    table.insert(out.messages, { type = result.type, message = result.message })
  end
  if show then
    return show(err, result, ctx, cfg)
  end
end

local function wait(what, cond)
  local ok = vim.wait(timeout, cond, 20)
  if not ok then
    error("timed out waiting for " .. what)
  end
end

local function position(spec)
  local line, col = spec:match("^(%d+),(%d+)$")
  return tonumber(line), tonumber(col)
end

local hrm = require("hrm_lsp")
local client

local function call(fn)
  local done, value, err = false, nil, nil
  fn(function(v, e)
    done, value, err = true, v, e
  end)
  wait("an answer", function()
    return done
  end)
  return value, err
end

local function request(method, params)
  return call(function(cb)
    local handler = function(err, result)
      cb(result, err)
    end
    local mt = getmetatable(client)
    if mt ~= nil and type(mt.__index) == "table" and type(mt.__index.request) == "function" then
      client:request(method, params, handler, 0)
    else
      client.request(method, params, handler, 0)
    end
  end)
end

local steps = {}

function steps.setup()
  local opts = decode(vim.env.HRM_TEST_SETUP)
  if opts.settings and next(opts.settings) == nil then
    opts.settings = {} -- json_decode gives a dict-typed empty table; use a plain one like a user would
  end
  -- Twice: setup is idempotent (one client, same state).
  out.steps.setup = { first = hrm.setup(opts), second = hrm.setup(opts), api = hrm.api() }
  out.steps.setup.status = require("hrm_lsp.status").line()
end

function steps.open()
  vim.cmd("edit " .. vim.fn.fnameescape(vim.env.HRM_TEST_FILE))
  out.steps.open = { filetype = vim.bo.filetype }
  wait("the client to attach", function()
    client = hrm.client(0)
    return client ~= nil and (client.initialized == nil or client.initialized)
  end)
  local attached = 0
  local all = vim.lsp.get_clients and vim.lsp.get_clients() or vim.lsp.get_active_clients()
  for _, c in pairs(all) do
    if c.name == "hrm_lsp" then
      attached = attached + 1
    end
  end
  out.steps.open.clients = attached
  out.steps.open.omnifunc = vim.bo.omnifunc
  out.steps.open.offset_encoding = client.offset_encoding
  out.steps.open.commands = { vim.fn.exists(":HrmRefine"), vim.fn.exists(":HrmStatus") }
end

-- :HrmStatus prints asynchronously (after the server answers); read it from :messages.
function steps.hrmstatus()
  vim.cmd("messages clear")
  vim.cmd("HrmStatus")
  local text = ""
  wait(":HrmStatus output", function()
    text = vim.fn.execute("messages")
    return text:find("server log:", 1, true) ~= nil
  end)
  out.steps.hrmstatus = text
end

function steps.status()
  local result, err = request("workspace/executeCommand", { command = "hrm-lsp.status", arguments = {} })
  out.steps.status = { result = result, err = err and tostring(err.message or err) }
end

-- setup() again with $HRM_TEST_SETUP2 on a running client: record the server's settings
-- once they change (the server re-reads them after didChangeConfiguration).
function steps.resetup()
  local function settings()
    local result = request("workspace/executeCommand", { command = "hrm-lsp.status", arguments = {} })
    return result and result.settings
  end
  local before = vim.fn.json_encode(settings())
  local opts = decode(vim.env.HRM_TEST_SETUP2)
  if opts.settings and next(opts.settings) == nil then
    opts.settings = {}
  end
  local ok = hrm.setup(opts)
  local after
  wait("the server to apply the new settings", function()
    after = settings()
    return vim.fn.json_encode(after) ~= before
  end)
  local all = vim.lsp.get_clients and vim.lsp.get_clients() or vim.lsp.get_active_clients()
  local count = 0
  for _, c in pairs(all) do
    if c.name == "hrm_lsp" then
      count = count + 1
    end
  end
  out.steps.resetup = { ok = ok, settings = after, clients = count, statusline = hrm.statusline() }
end

function steps.ready()
  local last
  wait("the model to load or fail", function()
    local result = request("workspace/executeCommand", { command = "hrm-lsp.status", arguments = {} })
    last = result and result.model
    return last ~= nil and (last.state == "ready" or last.state == "failed")
  end)
  -- The $/progress end that feeds the statusline may trail the status answer slightly.
  vim.wait(timeout, function()
    return hrm.statusline() ~= "HRGC: loading" and hrm.statusline() ~= "HRGC: starting"
  end, 20)
  out.steps.ready = { model = last, statusline = hrm.statusline() }
end

function steps.complete()
  local line, col = position(vim.env.HRM_TEST_COMPLETE_AT)
  vim.api.nvim_win_set_cursor(0, { line, col })
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 1 }
  local result, err = request("textDocument/completion", params)
  local items = result and (result.items or result) or {}
  local labels = {}
  for _, item in ipairs(items) do
    table.insert(labels, { label = item.label, detail = item.detail, textEdit = item.textEdit })
  end
  out.steps.complete = { items = labels, err = err and tostring(err.message or err), incomplete = result and result.isIncomplete }
end

function steps.refine()
  local line, col = position(vim.env.HRM_TEST_REFINE_AT)
  vim.api.nvim_win_set_cursor(0, { line, col })
  local before = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  local ok, message = call(function(cb)
    hrm.refine(cb)
  end)
  -- The edit may arrive through workspace/applyEdit just after the command answers.
  if ok then
    vim.wait(timeout, function()
      return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n") ~= table.concat(before, "\n")
    end, 20)
  end
  out.steps.refine = {
    ok = ok,
    message = message,
    before = table.concat(before, "\n"),
    after = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n"),
  }
end

local ok, err = pcall(function()
  for step in (vim.env.HRM_TEST_STEPS or ""):gmatch("[^,]+") do
    steps[step]()
  end
end)
if not ok then
  table.insert(out.errors, tostring(err))
end
write_out()
vim.cmd("qall!")
