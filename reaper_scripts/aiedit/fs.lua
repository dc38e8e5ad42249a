-- @noindex
--[[ Paths and files: home, joins, atomic writes (the daemon must never see a half-written file). ]]
local M = require("aiedit.core")
---------------------------------------------------------------------------------------------
-- Files and paths
---------------------------------------------------------------------------------------------

M.is_windows = package.config:sub(1, 1) == "\\"
M.sep = M.is_windows and "\\" or "/"

function M.join(...)
  local parts = { ... }
  local out = parts[1]
  for i = 2, #parts do
    if out:sub(-1) == "/" or out:sub(-1) == "\\" then out = out .. parts[i]
    else out = out .. M.sep .. parts[i] end
  end
  return out
end

function M.is_abs(p)
  return p:sub(1, 1) == "/" or p:match("^%a:[/\\]") ~= nil or p:sub(1, 2) == "\\\\"
end

-- Same rule as the daemon (bridge/spool.py: Path.home()): USERPROFILE on Windows, HOME elsewhere.
function M.home()
  if M.is_windows then return os.getenv("USERPROFILE") or os.getenv("HOME") or "." end
  return os.getenv("HOME") or os.getenv("USERPROFILE") or "."
end

function M.expand_user(p)
  if p:sub(1, 1) == "~" then return M.home() .. p:sub(2) end
  return p
end

function M.file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

function M.read_file(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.mkdir_p(p)
  if reaper.RecursiveCreateDirectory then reaper.RecursiveCreateDirectory(p, 0) end
end

-- Write under a temporary name in the same folder, then rename: the daemon watches the inbox
-- and must never see a half-written file (protocol: "write a temporary name first").
function M.write_atomic(dir, final_name, content)
  M.mkdir_p(dir)
  local tmp = M.join(dir, ".tmp-" .. final_name .. ".part")
  local f, err = io.open(tmp, "wb")
  if not f then return nil, "cannot write " .. tmp .. ": " .. tostring(err) end
  f:write(content)
  f:close()
  local final = M.join(dir, final_name)
  local ok, rerr = os.rename(tmp, final)
  if not ok then
    os.remove(tmp)
    return nil, "cannot rename into " .. final .. ": " .. tostring(rerr)
  end
  return final
end

-- Copies a file under a temporary name, then renames it (a reader never sees half a file).
function M.copy_file(src, dest)
  local fin, err = io.open(src, "rb")
  if not fin then return nil, "cannot read " .. src .. ": " .. tostring(err) end
  local part = dest .. ".part"
  local fout, werr = io.open(part, "wb")
  if not fout then fin:close() return nil, "cannot write " .. part .. ": " .. tostring(werr) end
  while true do
    local block = fin:read(1 << 20)
    if not block then break end
    fout:write(block)
  end
  fin:close()
  fout:close()
  os.remove(dest)
  local ok, rerr = os.rename(part, dest)
  if not ok then os.remove(part) return nil, tostring(rerr) end
  return dest
end

function M.read_json_file(p)
  local s = M.read_file(p)
  if not s then return nil, "missing" end
  return M.json_decode(s)
end

return M
