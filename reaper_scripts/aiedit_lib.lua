-- @noindex
--[[
aiedit shared library for the REAPER scripts (installed by the "AI edit" package as [nomain]).

The scripts know only docs/protocol.md: they drop job files into SPOOL/inbox/ and read
SPOOL/jobs/<id>/status.json back. Stock REAPER has no sockets, so everything here is files,
ExtState and a defer loop. Nothing in this file blocks waiting for the engine.

Sections: JSON, files, settings, engine check, reading items, rendering, jobs, registry,
import, jobs window.
]]

local M = {}
M.VERSION = "0.1.0"
M.SECTION = "aiedit"          -- ExtState section for settings
M.JOBS_SECTION = "aiedit.jobs" -- ExtState section for the job <-> item bookkeeping

---------------------------------------------------------------------------------------------
-- JSON (small, strict enough for the protocol: objects, arrays, strings with escapes and
-- unicode, numbers, true/false/null)
---------------------------------------------------------------------------------------------

-- json_null stands for JSON null inside tables (a nil would vanish from a Lua table).
M.null = setmetatable({}, { __tostring = function() return "null" end, __name = "json_null" })
local ARRAY_MT = { __jsontype = "array" }
local OBJECT_MT = { __jsontype = "object" }

function M.array(t) return setmetatable(t or {}, ARRAY_MT) end
function M.object(t) return setmetatable(t or {}, OBJECT_MT) end

local function is_array(t)
  local mt = getmetatable(t)
  if mt and mt.__jsontype then return mt.__jsontype == "array" end
  local n = #t
  if n == 0 then return false end -- an unmarked empty table is an object
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function encode_string(s)
  -- UTF-8 bytes (η, emoji) pass through unchanged: JSON text is UTF-8.
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function encode_number(x)
  if math.type(x) == "integer" then return string.format("%d", x) end
  if x ~= x or x == math.huge or x == -math.huge then error("JSON cannot hold " .. tostring(x)) end
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format("%.1f", x) end
  -- shortest of %.15g / %.17g that reads back exactly (positions must survive the trip)
  local s = string.format("%.15g", x)
  if tonumber(s) ~= x then s = string.format("%.17g", x) end
  return s
end

local encode_value
local function encode_table(t, depth)
  if depth > 64 then error("JSON nesting too deep") end
  local parts = {}
  if is_array(t) then
    for i = 1, #t do parts[i] = encode_value(t[i], depth + 1) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("JSON object keys must be strings") end
    keys[#keys + 1] = k
  end
  table.sort(keys) -- stable output: easier to read and to diff
  for i, k in ipairs(keys) do parts[i] = encode_string(k) .. ":" .. encode_value(t[k], depth + 1) end
  return "{" .. table.concat(parts, ",") .. "}"
end

encode_value = function(v, depth)
  local tv = type(v)
  if v == nil or v == M.null then return "null"
  elseif tv == "boolean" then return v and "true" or "false"
  elseif tv == "number" then return encode_number(v)
  elseif tv == "string" then return encode_string(v)
  elseif tv == "table" then return encode_table(v, depth)
  end
  error("JSON cannot hold a " .. tv)
end

function M.json_encode(v) return encode_value(v, 0) end

local function utf8_char(cp)
  return utf8.char(cp)
end

-- Decoder: a small recursive-descent parser over the string. Errors carry the byte position.
local function decode_error(s, pos, what)
  error(string.format("bad JSON at byte %d: %s", pos, what), 0)
end

local function skip_ws(s, pos)
  return s:find("[^ \t\r\n]", pos) or (#s + 1)
end

local decode_value

local function decode_string(s, pos)
  -- pos is at the opening quote
  local out, i = {}, pos + 1
  while true do
    local j = s:find('["\\%c]', i)
    if not j then decode_error(s, pos, "unterminated string") end
    out[#out + 1] = s:sub(i, j - 1)
    local c = s:sub(j, j)
    if c == '"' then return table.concat(out), j + 1 end
    if c ~= "\\" then decode_error(s, j, "control character in string") end
    local e = s:sub(j + 1, j + 1)
    local simple = ({ ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n',
                      r = '\r', t = '\t' })[e]
    if simple then
      out[#out + 1] = simple
      i = j + 2
    elseif e == "u" then
      local hex = s:match("^%x%x%x%x", j + 2)
      if not hex then decode_error(s, j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then -- surrogate pair: needs the low half
        local lo = s:match("^\\u(%x%x%x%x)", i)
        local lo_cp = lo and tonumber(lo, 16)
        if not lo_cp or lo_cp < 0xDC00 or lo_cp > 0xDFFF then decode_error(s, j, "lone surrogate") end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo_cp - 0xDC00)
        i = i + 6
      end
      out[#out + 1] = utf8_char(cp)
    else
      decode_error(s, j, "bad escape")
    end
  end
end

local function decode_number(s, pos)
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if not num or num == "" or num == "-" then decode_error(s, pos, "bad number") end
  local v = tonumber(num)
  if v and not num:find("[.eE]") then v = math.tointeger(v) or v end -- "3" stays an integer
  if v == nil then decode_error(s, pos, "bad number") end
  return v, pos + #num
end

local function decode_array(s, pos)
  local arr, i = M.array(), skip_ws(s, pos + 1)
  if s:sub(i, i) == "]" then return arr, i + 1 end
  while true do
    local v
    v, i = decode_value(s, i)
    arr[#arr + 1] = v
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "]" then return arr, i + 1 end
    if c ~= "," then decode_error(s, i, "expected , or ]") end
    i = skip_ws(s, i + 1)
  end
end

local function decode_object(s, pos)
  local obj, i = M.object(), skip_ws(s, pos + 1)
  if s:sub(i, i) == "}" then return obj, i + 1 end
  while true do
    if s:sub(i, i) ~= '"' then decode_error(s, i, "expected a key") end
    local k
    k, i = decode_string(s, i)
    i = skip_ws(s, i)
    if s:sub(i, i) ~= ":" then decode_error(s, i, "expected :") end
    local v
    v, i = decode_value(s, skip_ws(s, i + 1))
    obj[k] = v
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "}" then return obj, i + 1 end
    if c ~= "," then decode_error(s, i, "expected , or }") end
    i = skip_ws(s, i + 1)
  end
end

decode_value = function(s, pos)
  pos = skip_ws(s, pos)
  local c = s:sub(pos, pos)
  if c == "{" then return decode_object(s, pos)
  elseif c == "[" then return decode_array(s, pos)
  elseif c == '"' then return decode_string(s, pos)
  elseif c == "-" or c:match("%d") then return decode_number(s, pos)
  elseif s:sub(pos, pos + 3) == "true" then return true, pos + 4
  elseif s:sub(pos, pos + 4) == "false" then return false, pos + 5
  elseif s:sub(pos, pos + 3) == "null" then return M.null, pos + 4
  end
  decode_error(s, pos, "unexpected " .. (c == "" and "end of text" or c))
end

-- Returns value or nil, error message (never raises: callers decide what a bad file means).
function M.json_decode(s)
  if type(s) ~= "string" then return nil, "no text" end
  local ok, v, pos = pcall(decode_value, s, 1)
  if not ok then return nil, v end
  if skip_ws(s, pos) <= #s then return nil, "trailing text after JSON" end
  return v
end

-- JSON null and Lua nil read the same to callers.
function M.val(v) if v == M.null then return nil end return v end

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

function M.home()
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

function M.read_json_file(p)
  local s = M.read_file(p)
  if not s then return nil, "missing" end
  return M.json_decode(s)
end

---------------------------------------------------------------------------------------------
-- Settings (ExtState section "aiedit", persisted across REAPER restarts)
---------------------------------------------------------------------------------------------

M.DEFAULTS = {
  spool = "~/.aiedit/spool",   -- the daemon's spool folder (protocol default)
  engine_cmd = "aiedit serve", -- how to start the daemon; --spool is appended
  activate_best = "yes",       -- make the best-scoring take active after import
  steps = "",                  -- optional JSON steps override, e.g. {"embed":3,"tune":3,"sample":4}
  token = "",                  -- only when the daemon was started with --token
  last_prompt = "",
  last_etas = "0.3, 0.5, 0.7",
  last_mode = "lora",
  last_seed = "0",
  last_scope = "selected items",
  last_use_notes = "yes",
}

function M.get_setting(key)
  local v = reaper.GetExtState(M.SECTION, key)
  if v == nil or v == "" then return M.DEFAULTS[key] or "" end
  return v
end

function M.set_setting(key, value)
  reaper.SetExtState(M.SECTION, key, tostring(value), true)
end

function M.spool_dir()
  local p = M.expand_user(M.get_setting("spool"))
  return (p:gsub("[/\\]+$", ""))
end

function M.is_yes(v)
  v = tostring(v or ""):lower():gsub("^%s+", ""):gsub("%s+$", "")
  return v == "yes" or v == "y" or v == "1" or v == "true" or v == "on"
end

-- Steps override from the settings: nil when unset, else a table, or nil + error.
function M.steps_override()
  local s = M.get_setting("steps")
  if s == nil or s:match("^%s*$") then return nil end
  local t, err = M.json_decode(s)
  if type(t) ~= "table" then return nil, "steps setting is not a JSON object: " .. tostring(err) end
  return t
end

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

function M.quote_arg(s)
  return '"' .. s:gsub('"', '\\"') .. '"'
end

function M.start_command(spool)
  return M.get_setting("engine_cmd") .. " --spool " .. M.quote_arg(spool)
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
  local answer = reaper.ShowMessageBox(msg, "AI edit: engine not running", 3)
  if answer == 6 then
    -- -1: do not wait. A blocking ExecProcess would freeze REAPER for as long as the daemon runs.
    reaper.ExecProcess(cmd, -1)
    return true
  end
  return answer == 7
end

---------------------------------------------------------------------------------------------
-- Reading items: which audio region does an item play, and can REAPER hand it over as a file?
---------------------------------------------------------------------------------------------

-- Containers the daemon reads directly and where REAPER's source time equals file time.
local PLAIN_TYPES = { WAVE = true, FLAC = true, AIFF = true }
local PLAIN_EXT = { wav = true, wave = true, flac = true, aif = true, aiff = true, w64 = true }
local EPS = 1e-6

function M.item_guid(item)
  local _, g = reaper.GetSetMediaItemInfo_String(item, "GUID", "", false)
  return g
end

function M.take_guid(take)
  local _, g = reaper.GetSetMediaItemTakeInfo_String(take, "GUID", "", false)
  return g
end

function M.take_name(take)
  local _, n = reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", "", false)
  return n or ""
end

local function enabled_take_fx(take)
  if not reaper.TakeFX_GetCount then return 0 end
  local n = 0
  for i = 0, reaper.TakeFX_GetCount(take) - 1 do
    if not reaper.TakeFX_GetEnabled or reaper.TakeFX_GetEnabled(take, i) then n = n + 1 end
  end
  return n
end

local function source_path(src)
  local p = reaper.GetMediaSourceFileName(src, "")
  if p and p ~= "" and not M.is_abs(p) then
    p = M.join(reaper.GetProjectPath(""), p) -- relative media paths are relative to the project
  end
  return p
end

-- Describes what an item plays. Returns a table
--   {take, src, path, sr, channels, pos, len, offs, rate, how = "file" | "render", why}
-- or nil, reason when the item cannot be sent at all.
function M.inspect_item(item)
  local take = reaper.GetActiveTake(item)
  if not take then return nil, "empty item (no take)" end
  if reaper.TakeIsMIDI(take) then return nil, "MIDI take: only audio can be edited" end
  local src = reaper.GetMediaItemTake_Source(take)
  if not src then return nil, "take has no source" end
  local stype = reaper.GetMediaSourceType(src, "") or ""
  if stype == "MIDI" or stype == "MIDIPOOL" then return nil, "MIDI take: only audio can be edited" end
  if stype == "EMPTY" or stype == "" then return nil, "empty take (no audio source)" end
  if enabled_take_fx(take) > 0 then
    -- The audio accessor reads the take without its FX ("pre-FX"), and the file does not have
    -- them either: anything we sent would not be what the user hears. Refuse, say how to fix.
    return nil, "take has active take FX: apply them first (Item: Apply track/take FX to items " ..
      "as new take) or bypass them"
  end
  local sr = reaper.GetMediaSourceSampleRate(src)
  local ch = reaper.GetMediaSourceNumChannels(src)
  if not sr or sr <= 0 or not ch or ch <= 0 then return nil, "source has no audio (" .. stype .. ")" end
  local info = {
    take = take, src = src, sr = math.floor(sr + 0.5), channels = ch, stype = stype,
    pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION"),
    len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH"),
    offs = reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS"),
    rate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE"),
    path = source_path(src),
  }
  if info.len <= 0 then return nil, "item has zero length" end
  if info.rate <= 0 then info.rate = 1 end
  info.how, info.why = "file", nil
  local ext = (info.path or ""):match("%.([%w]+)$")
  local src_len = reaper.GetMediaSourceLength(src)
  local stretch = reaper.GetTakeNumStretchMarkers and reaper.GetTakeNumStretchMarkers(take) or 0
  if not PLAIN_TYPES[stype] or not (ext and PLAIN_EXT[ext:lower()]) then
    info.how, info.why = "render", stype == "SECTION" and "section or reversed source" or
      ("source is " .. stype .. ", not a plain WAV/AIFF/FLAC file")
  elseif stretch > 0 then
    info.how, info.why = "render", "take has stretch markers"
  elseif info.offs < -EPS or info.offs + info.len * info.rate > src_len + 1e-4 then
    info.how, info.why = "render", "item extends beyond its source (loop or padding)"
  end
  if info.how == "file" and not M.file_exists(info.path) then
    return nil, "source file not found: " .. tostring(info.path)
  end
  return info
end

-- Overlap of the time selection with the item, in item-timeline seconds, or nil.
function M.selection_overlap(info, ts, te)
  if not ts or not te or te - ts <= EPS then return nil end
  local s = math.max(ts, info.pos)
  local e = math.min(te, info.pos + info.len)
  if e - s <= EPS then return nil end
  -- A selection covering the whole item is a whole-item edit, not an inpainting job.
  if s <= info.pos + EPS and e >= info.pos + info.len - EPS then return nil end
  return s, e
end

-- Source region and inpaint range for the job. In "file" mode the region is in source
-- seconds, so timeline distances are multiplied by the playrate. A rendered file already
-- has the playrate applied (it is the item as heard), so its times are timeline seconds.
function M.region_for(info, ts, te)
  local scale = info.how == "file" and info.rate or 1
  local region = info.how == "file"
    and { start = info.offs, length = info.len * info.rate }
    or { start = 0, length = info.len }
  local s, e = M.selection_overlap(info, ts, te)
  local inpaint = nil
  if s then inpaint = { start = (s - info.pos) * scale, ["end"] = (e - info.pos) * scale } end
  return region, inpaint
end

---------------------------------------------------------------------------------------------
-- Rendering: the item as heard -> a 32-bit float WAV, with REAPER's take audio accessor
---------------------------------------------------------------------------------------------

-- A minimal WAV writer (IEEE float, format 3). `fill(frame0, nframes)` returns a flat table of
-- interleaved samples for the next block.
function M.write_wav_float(path, sr, channels, frames, fill)
  local f, err = io.open(path, "wb")
  if not f then return nil, "cannot write " .. path .. ": " .. tostring(err) end
  local data_bytes = frames * channels * 4
  f:write("RIFF", string.pack("<I4", 4 + 26 + 12 + 8 + data_bytes), "WAVE")
  -- fmt chunk: 18 bytes (cbSize = 0) as non-PCM formats require, then a fact chunk.
  f:write("fmt ", string.pack("<I4I2I2I4I4I2I2I2", 18, 3, channels, sr, sr * channels * 4,
    channels * 4, 32, 0))
  f:write("fact", string.pack("<I4I4", 4, frames))
  f:write("data", string.pack("<I4", data_bytes))
  local block = 4096
  local done = 0
  while done < frames do
    local n = math.min(block, frames - done)
    local samples = fill(done, n)
    local packed = {}
    for i = 1, n * channels do packed[i] = string.pack("<f", samples[i] or 0.0) end
    f:write(table.concat(packed))
    done = done + n
  end
  f:close()
  return path
end

-- Renders [0, D_LENGTH] of the take as the item plays it (playrate, section, reverse, stretch
-- markers applied; take FX are refused earlier) at the source rate and channel count.
-- Take accessor time 0 is the item start.
function M.render_item(info, path)
  local aa = reaper.CreateTakeAudioAccessor(info.take)
  if not aa then return nil, "REAPER could not open an audio accessor for the take" end
  local frames = math.floor(info.len * info.sr + 0.5)
  local ch = info.channels
  local buf = reaper.new_array(4096 * ch)
  local ok, err = pcall(M.write_wav_float, path, info.sr, ch, frames, function(frame0, n)
    buf.clear()
    local rv = reaper.GetAudioAccessorSamples(aa, info.sr, ch, frame0 / info.sr, n, buf)
    if rv < 0 then error("audio accessor error") end
    local out = {}
    for i = 1, n * ch do out[i] = buf[i] end
    return out
  end)
  reaper.DestroyAudioAccessor(aa)
  if not ok then os.remove(path) return nil, tostring(err) end
  return path
end

---------------------------------------------------------------------------------------------
-- Dialog values
---------------------------------------------------------------------------------------------

function M.trim(s) return (tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", "")) end

-- "lora" | "full" | "sdedit" from what people type ("LoRA", "quick preview", ...), or nil.
function M.parse_mode(s)
  s = M.trim(s):lower()
  if s == "lora" or s == "" then return "lora" end
  if s == "full" or s == "full fine-tune" or s == "finetune" then return "full" end
  if s == "sdedit" or s == "preview" or s == "quick preview" or s == "quick" then return "sdedit" end
  return nil
end

function M.parse_etas(s, mode)
  local etas = M.array()
  for part in tostring(s or ""):gmatch("[^,;%s]+") do
    local v = tonumber(part)
    if not v then return nil, "not a number: " .. part end
    if mode == "sdedit" then
      if v <= 0 or v > 1 then return nil, "quick preview strengths must be in (0, 1]: " .. part end
    elseif v < 0 or v > 1.5 then
      return nil, "η must be in [0, 1.5]: " .. part
    end
    etas[#etas + 1] = v + 0.0
  end
  if #etas == 0 then return nil, "give at least one η value" end
  if #etas > 16 then return nil, "at most 16 η values" end
  return etas
end

-- Empty or "random": a fresh seed (recorded with the takes so results stay reproducible).
function M.parse_seed(s)
  s = M.trim(s):lower()
  if s == "" or s == "random" then return math.random(0, 2147483646) end
  local v = math.tointeger(tonumber(s))
  if not v or v < 0 then return nil, "seed must be a whole number ≥ 0 (or empty for random)" end
  return v
end

-- GetUserInputs with "\n" as the value separator: prompts may contain commas.
function M.user_inputs(title, captions, defaults, width)
  local caps = table.concat(captions, ",") .. ",separator=\n,extrawidth=" .. (width or 250)
  local ok, csv = reaper.GetUserInputs(title, #captions, caps, table.concat(defaults, "\n"))
  if not ok then return nil end
  local vals = {}
  for v in (csv .. "\n"):gmatch("([^\n]*)\n") do vals[#vals + 1] = v end
  return vals
end

---------------------------------------------------------------------------------------------
-- Jobs: build, submit, cancel
---------------------------------------------------------------------------------------------

local id_counter = 0
-- Unique among the daemon's jobs: a duplicate id is refused by the daemon, and we would then read
-- the older job's status as ours. So never reuse an id that exists in the inbox or jobs folder.
function M.new_job_id(item_guid, spool)
  local g = (item_guid or ""):gsub("[^%x]", ""):sub(1, 8):lower()
  if g == "" then g = "item" end
  while true do
    id_counter = id_counter + 1
    local id = string.format("rpr-%s-%d-%d%06d", g, os.time(), id_counter, math.random(0, 999999))
    if not spool or not (M.file_exists(M.join(spool, "inbox", id .. ".json"))
        or M.file_exists(M.join(spool, "jobs", id, "status.json"))) then
      return id
    end
  end
end

-- params: prompt, etas, mode, seed, priority. Returns job table, bookkeeping record, or nil, err.
-- Renders the item first when it cannot be handed over as a plain file.
function M.prepare_job(item, params, spool, ts, te)
  local info, why = M.inspect_item(item)
  if not info then return nil, why end
  local item_guid = M.item_guid(item)
  local id = M.new_job_id(item_guid, spool)
  local region, inpaint = M.region_for(info, ts, te)
  local path = info.path
  local rendered = nil
  if info.how == "render" then
    local dir = M.join(spool, "renders")
    M.mkdir_p(dir)
    local rpath, err = M.render_item(info, M.join(dir, id .. ".wav"))
    if not rpath then return nil, "could not render the item (" .. info.why .. "): " .. err end
    path, rendered = rpath, rpath
  end
  local label = M.take_name(info.take)
  local job = {
    version = 1, id = id,
    source = { path = path, start = region.start + 0.0, length = region.length + 0.0 },
    prompt = params.prompt, etas = params.etas, mode = params.mode, seed = params.seed,
    priority = params.priority or "interactive", label = label,
    inpaint = inpaint or M.null,
  }
  local steps, serr = M.steps_override()
  if serr then return nil, serr end
  if steps then job.steps = steps end
  local token = M.get_setting("token")
  if token ~= "" then job.token = token end
  local record = {
    id = id, spool = spool, item = item_guid, take = M.take_guid(info.take), label = label,
    prompt = params.prompt, mode = params.mode, seed = params.seed, etas = params.etas,
    priority = job.priority, how = info.how, rendered = rendered,
    -- new takes play at the original's rate when they hold source-time audio (see docs)
    rate = info.how == "file" and info.rate or 1.0,
    region_start = info.how == "file" and info.offs or 0.0,
    inpaint = inpaint, state = "submitted", stage = "queued", progress = 0.0,
    submitted = os.time(),
  }
  return job, record
end

function M.submit(spool, job)
  return M.write_atomic(M.join(spool, "inbox"), job.id .. ".json", M.json_encode(job))
end

-- Cancel: if the daemon has not picked the file up yet, take it back out of the inbox (then no
-- status will ever appear, so the caller marks it cancelled itself); else drop a cancel file.
function M.cancel(record)
  local inbox = M.join(record.spool, "inbox")
  if os.remove(M.join(inbox, record.id .. ".json")) then return "withdrawn" end
  local msg = { version = 1, op = "cancel", id = record.id }
  local token = M.get_setting("token")
  if token ~= "" then msg.token = token end
  local ok, err = M.write_atomic(inbox, "cancel-" .. record.id .. ".json", M.json_encode(msg))
  if not ok then return nil, err end
  return "requested"
end

function M.status_path(record)
  return M.join(record.spool, "jobs", record.id, "status.json")
end

function M.read_status(record)
  local st = M.read_json_file(M.status_path(record))
  if type(st) ~= "table" then return nil end
  return st
end

---------------------------------------------------------------------------------------------
-- Registry: job id -> item GUID, take GUID, label, prompt ... in persistent ExtState, so the
-- jobs window can import results after the edit script exited or REAPER restarted. All
-- scripts run on REAPER's main thread, so a read-modify-write inside one call is atomic.
---------------------------------------------------------------------------------------------

M.ACTIVE = { submitted = true, queued = true, running = true, cancelling = true }

function M.registry_ids()
  local ids = M.json_decode(reaper.GetExtState(M.JOBS_SECTION, "_index"))
  if type(ids) ~= "table" then return {} end
  return ids
end

local function registry_set_ids(ids)
  reaper.SetExtState(M.JOBS_SECTION, "_index", M.json_encode(M.array(ids)), true)
end

function M.registry_get(id)
  local r = M.json_decode(reaper.GetExtState(M.JOBS_SECTION, id))
  if type(r) ~= "table" then return nil end
  return r
end

function M.registry_put(record)
  reaper.SetExtState(M.JOBS_SECTION, record.id, M.json_encode(record), true)
  local ids = M.registry_ids()
  for _, id in ipairs(ids) do if id == record.id then return end end
  ids[#ids + 1] = record.id
  registry_set_ids(ids)
end

function M.registry_remove(id)
  reaper.DeleteExtState(M.JOBS_SECTION, id, true)
  local keep = {}
  for _, other in ipairs(M.registry_ids()) do if other ~= id then keep[#keep + 1] = other end end
  registry_set_ids(keep)
end

function M.registry_all()
  local out = {}
  for _, id in ipairs(M.registry_ids()) do
    local r = M.registry_get(id)
    if r then out[#out + 1] = r end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Import of finished jobs
---------------------------------------------------------------------------------------------

-- Item by GUID in any open project (the user may have switched project tabs meanwhile).
function M.find_item(guid)
  if reaper.BR_GetMediaItemByGUID then
    local it = reaper.BR_GetMediaItemByGUID(0, guid)
    if it then return it end
  end
  local p = 0
  while true do
    local proj = reaper.EnumProjects(p, "")
    if not proj then break end
    for i = 0, reaper.CountMediaItems(proj) - 1 do
      local it = reaper.GetMediaItem(proj, i)
      if M.item_guid(it) == guid then return it end
    end
    p = p + 1
  end
  return nil
end

function M.find_take(item, guid)
  for i = 0, reaper.CountTakes(item) - 1 do
    local tk = reaper.GetTake(item, i)
    if tk and M.take_guid(tk) == guid then return tk end
  end
  return nil
end

local function short_prompt(p)
  if utf8.len(p) and utf8.len(p) > 48 then
    return p:sub(1, utf8.offset(p, 46) - 1) .. "…"
  end
  return p
end

function M.take_label(eta, prompt)
  return string.format("AI η=%.2f · %s", eta, short_prompt(prompt))
end

-- Playback settings copied from the original take when the new take holds source-time audio,
-- so switching takes sounds like switching audio, nothing else.
local COPY_FROM_ORIGINAL = { "D_PITCH", "B_PPITCH", "I_PITCHMODE", "D_VOL", "D_PAN", "I_CHANMODE" }

local function set_ext(take, key, value)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:" .. key, tostring(value), true)
end

local function add_result_take(item, original, record, status, t, index)
  local tk = reaper.AddTakeToMediaItem(item)
  reaper.SetMediaItemTake_Source(tk, reaper.PCM_Source_CreateFromFile(t.path))
  reaper.SetMediaItemTakeInfo_Value(tk, "D_PLAYRATE", record.rate)
  -- The take file starts at the region start. If the item's left edge was trimmed after
  -- submission, the offset keeps the new take lined up with the original.
  local offs = 0.0
  if original and record.how == "file" then
    local now = reaper.GetMediaItemTakeInfo_Value(original, "D_STARTOFFS")
    if math.abs(reaper.GetMediaItemTakeInfo_Value(original, "D_PLAYRATE") - record.rate) < EPS then
      offs = now - record.region_start
      if math.abs(offs) < EPS then offs = 0.0 end
    end
  end
  reaper.SetMediaItemTakeInfo_Value(tk, "D_STARTOFFS", offs)
  if original and record.how == "file" then
    for _, k in ipairs(COPY_FROM_ORIGINAL) do
      reaper.SetMediaItemTakeInfo_Value(tk, k, reaper.GetMediaItemTakeInfo_Value(original, k))
    end
  end
  local eta = tonumber(t.eta) or 0
  reaper.GetSetMediaItemTakeInfo_String(tk, "P_NAME", M.take_label(eta, record.prompt), true)
  set_ext(tk, "aiedit_prompt", record.prompt)
  set_ext(tk, "aiedit_eta", string.format("%.4g", eta))
  set_ext(tk, "aiedit_seed", M.val(status.seed) or record.seed)
  set_ext(tk, "aiedit_mode", M.val(status.mode) or record.mode)
  set_ext(tk, "aiedit_model", M.val(status.model) or "")
  set_ext(tk, "aiedit_scores", M.json_encode(M.val(t.scores) or M.object()))
  set_ext(tk, "aiedit_job", record.id)
  set_ext(tk, "aiedit_best", (M.val(status.best) == index - 1) and "1" or "0")
  if record.inpaint then set_ext(tk, "aiedit_inpaint", M.json_encode(record.inpaint)) end
  return tk
end

-- Imports a "done" status. Returns ok, message. One undo point per import.
function M.import_result(record, status)
  local takes = M.val(status.takes) or {}
  if #takes == 0 then return false, "the job finished without takes" end
  for _, t in ipairs(takes) do
    if not M.file_exists(t.path) then return false, "take file missing: " .. tostring(t.path) end
  end
  local item = M.find_item(record.item)
  if not item then
    return false, "the item is gone; the takes are kept in " .. M.join(record.spool, "jobs", record.id,
      "takes"), "missing"
  end
  local original = M.find_take(item, record.take)
  local was_active = reaper.GetActiveTake(item)
  reaper.PreventUIRefresh(1)
  reaper.Undo_BeginBlock()
  local new = {}
  for i, t in ipairs(takes) do new[i] = add_result_take(item, original, record, status, t, i) end
  local best = M.val(status.best)
  local activate = M.is_yes(M.get_setting("activate_best")) and best and new[best + 1]
  reaper.SetActiveTake(activate or was_active) -- AddTakeToMediaItem may switch the active take
  reaper.UpdateItemInProject(item)
  reaper.Undo_EndBlock(string.format("AI edit: %d take%s for %s", #new, #new == 1 and "" or "s",
    record.label ~= "" and record.label or "item"), -1)
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  return true, string.format("%d take%s added", #new, #new == 1 and "" or "s")
end

---------------------------------------------------------------------------------------------
-- Job state updates (the jobs window calls this for every active job a few times a second)
---------------------------------------------------------------------------------------------

local function log(msg) reaper.ShowConsoleMsg("[aiedit] " .. msg .. "\n") end
M.log = log

local function finish(record, state, message)
  record.state = state
  record.message = message
  record.finished = os.time()
  if record.rendered then os.remove(record.rendered) record.rendered = nil end
  M.registry_put(record)
end

-- Reads the job's status.json and acts on it. Completion racing with cancel: when the user
-- cancelled, a job that still finished is not imported (its files stay in the spool).
function M.update_job(record)
  if not M.ACTIVE[record.state] then return record end
  local st = M.read_status(record)
  if not st then return record end -- not picked up yet
  local state = M.val(st.state) or "queued"
  record.stage = M.val(st.stage) or state
  record.progress = tonumber(M.val(st.progress)) or record.progress or 0
  if state == "done" then
    if record.state == "cancelling" then
      finish(record, "cancelled", "finished before the cancel arrived: not imported; files kept in " ..
        M.join(record.spool, "jobs", record.id, "takes"))
      log(record.label .. ": " .. record.message)
      return record
    end
    local ok, msg, kind = M.import_result(record, st)
    finish(record, ok and "imported" or (kind or "failed"), msg)
    log(record.label .. ": " .. msg)
  elseif state == "failed" then
    finish(record, "failed", M.val(st.error) or "failed")
    log(record.label .. ": failed: " .. record.message)
  elseif state == "cancelled" then
    finish(record, "cancelled", M.val(st.error) or "cancelled")
  else
    if record.state ~= "cancelling" then record.state = state end
    M.registry_put(record)
  end
  return record
end

function M.request_cancel(record)
  if not M.ACTIVE[record.state] or record.state == "cancelling" then return end
  local how, err = M.cancel(record)
  if how == "withdrawn" then
    finish(record, "cancelled", "cancelled before the engine picked it up")
  elseif how then
    record.state = "cancelling"
    M.registry_put(record)
  else
    log("could not cancel " .. record.id .. ": " .. tostring(err))
  end
end

-- At window start: forget jobs that ended in an earlier session; retry items that were missing
-- (the user may have reopened the project since).
function M.prune_and_retry()
  for _, r in ipairs(M.registry_all()) do
    if r.state == "missing" then
      r.state = "running" -- reread status.json and try the import again
      M.registry_put(r)
    elseif not M.ACTIVE[r.state] then
      M.registry_remove(r.id)
    end
  end
end

---------------------------------------------------------------------------------------------
-- Jobs window (gfx, defer loop; never blocks)
---------------------------------------------------------------------------------------------

local W = { poll_every = 0.5, row_h = 26, pad = 8 }

local function window_alive()
  local t = tonumber(reaper.GetExtState(M.SECTION, "window_heartbeat"))
  return t and math.abs(reaper.time_precise() - t) < 2
end
M.window_alive = window_alive

local function state_text(r)
  if r.state == "imported" then return "done: " .. (r.message or "")
  elseif r.state == "failed" then return "failed: " .. (r.message or "")
  elseif r.state == "missing" then return "item gone: " .. (r.message or "")
  elseif r.state == "cancelled" then return "cancelled" .. (r.message and (": " .. r.message) or "")
  elseif r.state == "cancelling" then return "cancelling…"
  elseif r.state == "submitted" then return "waiting for the engine"
  end
  return r.state
end

local function hit(t, x, y) return x >= t.x and x < t.x + t.w and y >= t.y and y < t.y + t.h end

local function button(ui, id, label, x, y, w, h)
  gfx.set(0.3, 0.3, 0.3, 1)
  gfx.rect(x, y, w, h, 1)
  gfx.set(1, 1, 1, 1)
  gfx.x, gfx.y = x + 6, y + 4
  gfx.drawstr(label)
  ui.targets[#ui.targets + 1] = { id = id, x = x, y = y, w = w, h = h }
end

local function draw(ui)
  ui.targets = {}
  gfx.set(0.12, 0.12, 0.12, 1)
  gfx.rect(0, 0, gfx.w, gfx.h, 1)
  local y = W.pad
  gfx.set(1, 1, 1, 1)
  gfx.x, gfx.y = W.pad, y
  local spool = M.spool_dir()
  local eng = M.engine_info(spool)
  gfx.drawstr(eng and ("engine: running, model " .. tostring(M.val(eng.model) or "?"))
    or ("engine not running: start it with  " .. M.start_command(spool)))
  button(ui, "cancel_all", "Cancel all", gfx.w - 90 - W.pad, y - 2, 90, 20)
  y = y + 28
  for _, r in ipairs(ui.rows) do
    gfx.set(0.9, 0.9, 0.9, 1)
    gfx.x, gfx.y = W.pad, y + 4
    gfx.drawstr((r.label ~= "" and r.label or r.id) .. "  ·  " .. (r.stage or ""))
    local bx, bw = 260, math.max(60, gfx.w - 260 - 280)
    gfx.set(0.25, 0.25, 0.25, 1)
    gfx.rect(bx, y + 4, bw, 14, 1)
    gfx.set(0.2, 0.6, 0.9, 1)
    gfx.rect(bx, y + 4, math.floor(bw * math.max(0, math.min(1, r.progress or 0))), 14, 1)
    gfx.set(0.9, 0.9, 0.9, 1)
    gfx.x, gfx.y = bx + bw + 10, y + 4
    gfx.drawstr(state_text(r))
    if M.ACTIVE[r.state] and r.state ~= "cancelling" then
      button(ui, "cancel:" .. r.id, "Cancel", gfx.w - 70 - W.pad, y + 1, 70, 20)
    end
    y = y + W.row_h
  end
  -- Exposed for test harnesses (the fake REAPER clicks these); harmless inside REAPER.
  AIEDIT_HIT_TARGETS = ui.targets
  gfx.update()
end

local function on_click(ui, id)
  if id == "cancel_all" then
    for _, r in ipairs(ui.rows) do M.request_cancel(r) end
  else
    local jid = id:match("^cancel:(.+)$")
    for _, r in ipairs(ui.rows) do if r.id == jid then M.request_cancel(r) end end
  end
end

local function handle_mouse(ui)
  local down = (gfx.mouse_cap & 1) == 1
  -- act on release over the same button that was pressed: a drag-off cancels the click
  if down and not ui.was_down then
    ui.pressed = nil
    for _, t in ipairs(ui.targets) do if hit(t, gfx.mouse_x, gfx.mouse_y) then ui.pressed = t.id end end
  elseif not down and ui.was_down and ui.pressed then
    for _, t in ipairs(ui.targets) do
      if t.id == ui.pressed and hit(t, gfx.mouse_x, gfx.mouse_y) then on_click(ui, t.id) end
    end
    ui.pressed = nil
  end
  ui.was_down = down
end

local function poll(ui)
  local rows = {}
  for _, r in ipairs(M.registry_all()) do
    local ok, res = pcall(M.update_job, r)
    if not ok then log("error while updating " .. r.id .. ": " .. tostring(res)) end
    rows[#rows + 1] = r
  end
  ui.rows = rows
  local active = 0
  for _, r in ipairs(rows) do if M.ACTIVE[r.state] then active = active + 1 end end
  ui.active = active
  AIEDIT_JOBS_ACTIVE = active -- for test harnesses: how many jobs are still running
end

local function close(ui)
  ui.closed = true
  reaper.DeleteExtState(M.SECTION, "window_heartbeat", false)
  gfx.quit()
end

-- Opens the jobs window unless one is already running (that one picks new jobs up by itself).
function M.run_jobs_window()
  if window_alive() then return false end
  M.prune_and_retry()
  local ui = { rows = {}, targets = {}, last_poll = -1e9 }
  gfx.init("AI edit jobs", 760, 260)
  reaper.atexit(function() if not ui.closed then close(ui) end end)
  local function loop()
    reaper.SetExtState(M.SECTION, "window_heartbeat", tostring(reaper.time_precise()), false)
    local ch = gfx.getchar()
    if ch == 27 or ch < 0 then close(ui) return end -- Esc, or the window was closed
    local now = reaper.time_precise()
    if now - ui.last_poll >= W.poll_every then
      ui.last_poll = now
      poll(ui)
    end
    draw(ui)
    handle_mouse(ui)
    reaper.defer(loop)
  end
  loop()
  return true
end

---------------------------------------------------------------------------------------------
-- Submitting many items (edit and batch share this)
---------------------------------------------------------------------------------------------

-- items: list of MediaItem; params_for(item) -> params table or nil, reason.
-- Returns submitted records and failures {label, reason}. One failing item never stops the rest.
function M.submit_items(items, params_for, spool, ts, te)
  local ok_list, failed = {}, {}
  for _, item in ipairs(items) do
    local tk = reaper.GetActiveTake(item)
    local label = tk and M.take_name(tk) or "(empty item)"
    local params, perr = params_for(item)
    local job, record = nil, perr
    if params then
      local okc, j, r = pcall(M.prepare_job, item, params, spool, ts, te)
      if not okc then job, record = nil, tostring(j) else job, record = j, r end
    end
    if job then
      local written, werr = M.submit(spool, job)
      if written then
        M.registry_put(record)
        ok_list[#ok_list + 1] = record
      else
        if record.rendered then os.remove(record.rendered) end
        failed[#failed + 1] = { label = label, reason = werr }
      end
    else
      failed[#failed + 1] = { label = label, reason = record }
    end
  end
  return ok_list, failed
end

function M.summary(ok_list, failed)
  local lines = { string.format("%d job%s queued.", #ok_list, #ok_list == 1 and "" or "s") }
  if #failed > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = string.format("%d item%s not sent:", #failed, #failed == 1 and "" or "s")
    for _, f in ipairs(failed) do lines[#lines + 1] = "  • " .. f.label .. ": " .. f.reason end
  end
  return table.concat(lines, "\n")
end

-- The script folder, for dofile of siblings.
function M.script_dir()
  local path = select(2, reaper.get_action_context())
  return path:match("^(.*[/\\])") or ""
end

return M
