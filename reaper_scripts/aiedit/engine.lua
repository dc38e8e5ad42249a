-- @noindex
--[[ Is the daemon running (SPOOL/daemon.json heartbeat), and how to start it without blocking REAPER. ]]
local M = require("aiedit.core")
---------------------------------------------------------------------------------------------
-- Engine check: SPOOL/daemon.json heartbeat must be younger than 10 s (protocol)
---------------------------------------------------------------------------------------------

M.HEARTBEAT_MAX_AGE = 10

function M.engine_info(spool)
  local info = M.read_json_file(M.join(spool, "daemon.json"))
  if type(info) ~= "table" then return nil, "no daemon.json" end
  local hb = tonumber(M.val(info.heartbeat))
  if not hb then return nil, "daemon.json has no heartbeat" end
  local age = os.time() - hb
  if age > M.HEARTBEAT_MAX_AGE then
    return nil, string.format("heartbeat is %d s old", math.floor(age))
  end
  return info
end

-- One argument of the command line ExecProcess starts, quoted for the platform's parser:
-- Windows: CreateProcess hands the line to the program, whose C runtime splits it (CommandLineToArgvW rules): inside
--   double quotes, backslashes are literal except before a '"', where 2n backslashes + '"' are n backslashes and the
--   end of the argument, and 2n+1 are n backslashes and a literal '"'. So backslashes before a '"' or the closing
--   quote are doubled ("C:\dir\" would otherwise swallow its closing quote). No cmd.exe: '%' and '^' are literal.
-- macOS/Linux: double quotes with \ " $ ` escaped, which a POSIX shell reads back exactly (as other REAPER scripts
--   quote for ExecProcess) and which leaves spaces and non-ASCII characters alone.
function M.quote_arg(s)
  if M.is_windows then
    local out = s:gsub('(\\*)"', function(bs) return bs .. bs .. '\\"' end)
    out = out:gsub("(\\+)$", "%1%1")
    return '"' .. out .. '"'
  end
  return '"' .. s:gsub('([\\"$`])', "\\%1") .. '"'
end

-- The engine command from the settings, with the program quoted when the setting is a bare path with spaces
-- (pasted from `aiedit doctor` or a file browser): "<path>" alone gets " serve" appended, "<path> serve ..." keeps
-- its arguments. A setting that already starts with a quote is the user's own quoting and is left alone.
function M.engine_command()
  local cmd = M.trim(M.get_setting("engine_cmd"))
  if cmd:sub(1, 1) == '"' or cmd:sub(1, 1) == "'" or not cmd:find(" ", 1, true) then return cmd end
  if M.file_exists(cmd) then return M.quote_arg(cmd) .. " serve" end
  local prog, rest = cmd:match("^(.-)(%s+serve.*)$")
  if prog and prog:find(" ", 1, true) and M.file_exists(prog) then return M.quote_arg(prog) .. rest end
  return cmd
end

function M.start_command(spool)
  return M.engine_command() .. " --spool " .. M.quote_arg(spool)
end

-- Asks what to do when the engine is not running. Returns true to go on and queue the jobs
-- (they wait in the inbox until a daemon starts), false to stop.
function M.ensure_engine(spool)
  if M.engine_info(spool) then return true end
  local cmd = M.start_command(spool)
  local msg = "The aiedit engine is not running (no fresh heartbeat in\n" ..
    M.join(spool, "daemon.json") .. ").\n\n" ..
    "Start it in a terminal with:\n\n    " .. cmd .. "\n\n" ..
    "Yes: start it now from REAPER and queue the jobs.\n" ..
    "No: queue the jobs anyway (they run when the engine starts).\n" ..
    "Cancel: do nothing."
  local program = M.engine_command():match('^%s*"([^"]+)"') or M.engine_command():match("^%s*(%S+)")
  if program and not M.is_abs(program) then
    -- ExecProcess does not search PATH the way a shell does, and a macOS app started from the Dock has no
    -- shell PATH at all: only a full path is sure to start
    msg = msg .. "\n\n(" .. program .. " is not a full path: if Yes does nothing, put the full path in " ..
      "AI edit settings; `aiedit doctor` prints it.)"
  end
  local answer = reaper.ShowMessageBox(msg, "AI edit: engine not running", 3)
  if answer == 6 then
    -- -2: do not wait, and start minimised (no console window flashing up on Windows). A blocking
    -- ExecProcess would freeze REAPER for as long as the daemon runs. "returns NULL on total failure".
    if reaper.ExecProcess(cmd, -2) == nil then
      reaper.ShowMessageBox("Could not start the engine:\n\n    " .. cmd .. "\n\nPut the full path of aiedit " ..
        "in AI edit settings (`aiedit doctor` prints it), or start it in a terminal. The jobs are queued " ..
        "and run when the engine starts.", "AI edit: engine not started", 0)
    else
      -- the jobs window reports it when no heartbeat follows (the start itself cannot be seen from here)
      reaper.SetExtState(M.SECTION, "engine_start", string.format("%.3f\t%s", reaper.time_precise(), cmd), false)
    end
    return true
  end
  return answer == 7
end

return M
