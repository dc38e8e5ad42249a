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

local function is_ascii(s) return not s:find("[\128-\255]") end

-- Does `ansi` (a value in the Windows ANSI code page) name the same path as `utf` (UTF-8)? ASCII characters must
-- agree (case-insensitively, as Windows paths do); each run of bytes >= 128 or '?' in the ANSI form stands for a
-- run of non-ASCII characters in the UTF-8 one (a character the code page has becomes its own bytes, one it lacks
-- becomes '?').
function M.same_path_skeleton(ansi, utf)
  local pat, i = { "^" }, 1
  while i <= #ansi do
    local b = ansi:byte(i)
    if b >= 128 or b == 63 then
      while i <= #ansi and (ansi:byte(i) >= 128 or ansi:byte(i) == 63) do i = i + 1 end
      pat[#pat + 1] = "[\128-\255]+"
    else
      pat[#pat + 1] = (ansi:sub(i, i):lower():gsub("%p", "%%%0"))
      i = i + 1
    end
  end
  pat[#pat + 1] = "$"
  return utf:lower():find(table.concat(pat)) ~= nil
end

-- The user's profile folder on Windows, exactly as the daemon sees it (Python's Path.home() reads USERPROFILE
-- through the wide API), or nil when REAPER cannot know it. The trap: REAPER's Lua hands os.getenv's value in the
-- ANSI code page (the C runtime's getenv; REAPER makes its file functions and its own paths UTF-8, not the
-- environment), so a user name outside ASCII comes back as other bytes, or as '?' for characters the code page
-- lacks, and a path built on it names a folder that does not exist. The rule, in order:
--   1. an ASCII value is exact (ASCII is the same in every code page);
--   2. REAPER's resource path is UTF-8 (GetResourcePath, since REAPER 5.70): when it is the default
--      <profile>\AppData\Roaming\<name> and <profile> agrees with the environment's value (same_path_skeleton),
--      <profile> is the exact folder;
--   3. a value that is valid UTF-8 and has no '?' (REAPER running with the UTF-8 code page) is taken as it is;
--   4. otherwise nil: the caller falls back to a folder under REAPER's resource path and names it in the engine
--      command it shows and runs (--spool), so REAPER and an engine it starts still agree.
function M.windows_home()
  local env = os.getenv("USERPROFILE")
  if env == "" then env = nil end
  if env and is_ascii(env) and not env:find("?", 1, true) then return env end
  local res = reaper and reaper.GetResourcePath and reaper.GetResourcePath() or ""
  local base = res:match("^(.-)[/\\][Aa][Pp][Pp][Dd][Aa][Tt][Aa][/\\][Rr][Oo][Aa][Mm][Ii][Nn][Gg][/\\][^/\\]+$")
  if base and base ~= "" and (env == nil or M.same_path_skeleton(env, base)) then return base end
  if env and not env:find("?", 1, true) and utf8.len(env) then return env end
  return nil
end

-- Same rule as the daemon (bridge's default spool: Path.home()): the profile folder on Windows (see windows_home;
-- nil when it cannot be known), HOME elsewhere.
function M.home()
  if M.is_windows then return M.windows_home() end
  return os.getenv("HOME") or os.getenv("USERPROFILE") or "."
end

-- An environment value that names a path, or nil when REAPER cannot read it exactly (Windows, not ASCII and not
-- UTF-8: see windows_home).
function M.env_path(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  if not M.is_windows or (is_ascii(v) and not v:find("?", 1, true)) then return v end
  if not v:find("?", 1, true) and utf8.len(v) then return v end
  return nil
end

function M.expand_user(p)
  if p:sub(1, 1) == "~" then
    local home = M.home()
    if home then return home .. p:sub(2) end
  end
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
