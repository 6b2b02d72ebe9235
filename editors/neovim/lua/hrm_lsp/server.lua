-- Finding and describing the server process: the command line, the workspace root, and the
-- install command to show when `hrm-lsp` cannot be found.
local M = {}

local is_windows = vim.fn.has("win32") == 1
local sep = is_windows and "\\" or "/"

local function executable(path)
  return path ~= nil and path ~= "" and vim.fn.executable(path) == 1
end

local function join(...)
  return table.concat({ ... }, sep)
end

--- Script directories of the active Python environment (activated venv or conda env).
function M.environment_dirs()
  local dirs = {}
  for _, var in ipairs({ "VIRTUAL_ENV", "CONDA_PREFIX" }) do
    local prefix = vim.env[var]
    if prefix and prefix ~= "" then
      table.insert(dirs, is_windows and join(prefix, "Scripts") or join(prefix, "bin"))
    end
  end
  return dirs
end

--- The command that installs the server into the active environment (or a default Python).
function M.install_command()
  local prefix = vim.env.VIRTUAL_ENV or vim.env.CONDA_PREFIX
  if prefix and prefix ~= "" then
    local python = is_windows and join(prefix, "Scripts", "python.exe") or join(prefix, "bin", "python")
    return vim.fn.shellescape(python) .. " -m pip install hrm-lsp"
  end
  return (is_windows and "py" or "python3") .. " -m pip install hrm-lsp"
end

--- Path of `hrm-lsp`: the active Python environment first, then PATH; nil when missing.
function M.find_executable()
  local name = is_windows and "hrm-lsp.exe" or "hrm-lsp"
  for _, dir in ipairs(M.environment_dirs()) do
    local candidate = join(dir, name)
    if executable(candidate) then
      return candidate
    end
  end
  local on_path = vim.fn.exepath("hrm-lsp")
  if on_path ~= "" then
    return on_path
  end
  return nil
end

--- The full command line for `opts` (see config.lua), or (nil, message) when not found.
function M.command(opts)
  local cmd
  if opts.cmd then
    cmd = vim.deepcopy(opts.cmd)
    if not executable(cmd[1]) then
      return nil, ("hrm_lsp: cmd[1] = %q is not executable; fix `cmd` in setup{} or remove it to "
        .. "find hrm-lsp automatically. To install the server: %s"):format(tostring(cmd[1]), M.install_command())
    end
  else
    local exe = M.find_executable()
    if exe == nil then
      return nil, ("hrm_lsp: the language server `hrm-lsp` was not found in the active Python "
        .. "environment or PATH. Install it with: %s (or pass cmd = { '/path/to/hrm-lsp', 'serve' } to setup)")
        :format(M.install_command())
    end
    cmd = { exe, "serve" }
  end
  if opts.log_file then
    vim.list_extend(cmd, { "--log-file", vim.fn.expand(opts.log_file) })
  end
  vim.list_extend(cmd, opts.extra_args or {})
  return cmd
end

--- Workspace root of `path`: the nearest directory upward holding one of `markers`, else
--- the file's directory. Works on 0.7 (no vim.fs).
function M.root_dir(path, markers)
  local dir = vim.fn.fnamemodify(path, ":p:h")
  local current = dir
  while true do
    for _, marker in ipairs(markers) do
      local candidate = current .. sep .. marker
      if vim.fn.filereadable(candidate) == 1 or vim.fn.isdirectory(candidate) == 1 then
        return current
      end
    end
    local parent = vim.fn.fnamemodify(current, ":h")
    if parent == current then
      return dir
    end
    current = parent
  end
end

return M
