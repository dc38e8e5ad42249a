--[[
A fake `reaper` and `gfx` for running the aiedit REAPER scripts under plain Lua 5.4.

The project is data: tracks -> items -> takes -> sources, the time selection, ExtState, queued
answers for GetUserInputs / ShowMessageBox. Every call that changes the project or talks to the
user is recorded, and `F.dump()` returns the whole state for the test to check.
defer callbacks are not run by themselves: the runner drives them (`F.run_defer_cycle()`).
]]

local F = { log = {}, messages = {}, console = {}, exec = {}, undo = {}, inputs_asked = {},
            deferred = {}, atexit = {}, gfx_frames = 0, gfx_text = {}, gfx_open = false,
            clock = 0.0, dt = 0.5, open_undo = 0, next_guid = 1, accessors = 0 }

local function guid()
  local g = string.format("{FAKE%04d-0000-0000-0000-%012d}", F.next_guid, F.next_guid)
  F.next_guid = F.next_guid + 1
  return g
end

---------------------------------------------------------------------------------------------
-- Building the project from the scenario
---------------------------------------------------------------------------------------------

local function read_wav_header(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read(4096)
  f:close()
  if not s or s:sub(1, 4) ~= "RIFF" or s:sub(9, 12) ~= "WAVE" then return nil end
  local pos, info = 13, {}
  while pos + 8 <= #s do
    local id, size = s:sub(pos, pos + 3), string.unpack("<I4", s, pos + 4)
    if id == "fmt " then
      local _, ch, sr, _, _, bits = string.unpack("<I2I2I4I4I2I2", s, pos + 8)
      info.channels, info.samplerate, info.bits = ch, sr, bits
    elseif id == "data" then
      info.data_bytes = size
      break
    end
    pos = pos + 8 + size + (size % 2)
  end
  if info.samplerate and info.data_bytes then
    info.frames = info.data_bytes // (info.channels * info.bits // 8)
    info.length = info.frames / info.samplerate
  end
  return info
end

local function make_source(spec)
  local src = { kind = "source", file = spec.file or "", type = spec.type or "WAVE",
                samplerate = spec.samplerate or 48000, channels = spec.channels or 2,
                length = spec.length or 10.0, created_from_file = spec.created_from_file }
  return src
end

local function make_take(spec, item)
  local tk = { kind = "take", item = item, guid = spec.guid or guid(), name = spec.name or "",
               ext = spec.ext or {}, fx = spec.fx or {}, stretch_markers = spec.stretch_markers or 0,
               midi = spec.midi or false,
               values = { D_STARTOFFS = spec.startoffs or 0.0, D_PLAYRATE = spec.playrate or 1.0,
                          D_PITCH = spec.pitch or 0.0, B_PPITCH = spec.preserve_pitch or 1,
                          I_PITCHMODE = -1, D_VOL = spec.vol or 1.0, D_PAN = 0.0, I_CHANMODE = 0 } }
  tk.source = spec.source and make_source(spec.source) or nil
  -- takes from the scenario are the user's originals: any write to them is an error
  tk.original_guard = spec.from_scenario or false
  if tk.source and tk.source.type == "MIDI" then tk.midi = true end
  return tk
end

local function make_item(spec, track)
  local it = { kind = "item", track = track, guid = spec.guid or guid(), selected = spec.selected or false,
               notes = spec.notes or "", takes = {}, active = (spec.active_take or 1),
               values = { D_POSITION = spec.position or 0.0, D_LENGTH = spec.length or 1.0 } }
  for _, tspec in ipairs(spec.takes or {}) do
    tspec.from_scenario = true
    it.takes[#it.takes + 1] = make_take(tspec, it)
  end
  if #it.takes == 0 then it.active = 0 end
  return it
end

function F.load(scenario)
  F.scenario = scenario
  F.tracks = {}
  for _, tspec in ipairs(scenario.tracks or {}) do
    local tr = { kind = "track", name = tspec.name or "", selected = tspec.selected or false, items = {} }
    for _, ispec in ipairs(tspec.items or {}) do tr.items[#tr.items + 1] = make_item(ispec, tr) end
    F.tracks[#F.tracks + 1] = tr
  end
  F.time_selection = scenario.time_selection or { 0, 0 }
  F.extstate = {}
  for k, v in pairs(scenario.extstate or {}) do F.extstate[k] = { value = v, persist = true } end
  F.user_inputs = scenario.user_inputs or {}
  F.mb_answers = scenario.mb_answers or {}
  F.keys = {}
  F.project_path = scenario.project_path or "/tmp"
end

local function all_items()
  local out = {}
  for _, tr in ipairs(F.tracks) do for _, it in ipairs(tr.items) do out[#out + 1] = it end end
  return out
end

function F.find_item(g)
  for _, it in ipairs(all_items()) do if it.guid == g then return it end end
end

function F.delete_item(g)
  for _, tr in ipairs(F.tracks) do
    for i, it in ipairs(tr.items) do
      if it.guid == g then table.remove(tr.items, i) it.deleted = true return true end
    end
  end
  return false
end

---------------------------------------------------------------------------------------------
-- reaper.*
---------------------------------------------------------------------------------------------

local R = {}

local function record(name, ...)
  F.log[#F.log + 1] = { fn = name, args = { ... } }
end

-- project / selection
function R.CountSelectedMediaItems(_)
  local n = 0
  for _, it in ipairs(all_items()) do if it.selected then n = n + 1 end end
  return n
end
function R.GetSelectedMediaItem(_, idx)
  local n = 0
  for _, it in ipairs(all_items()) do
    if it.selected then
      if n == idx then return it end
      n = n + 1
    end
  end
end
function R.CountMediaItems(_) return #all_items() end
function R.GetMediaItem(_, idx) return all_items()[idx + 1] end
function R.CountTracks(_) return #F.tracks end
function R.GetTrack(_, idx) return F.tracks[idx + 1] end
function R.CountSelectedTracks(_)
  local n = 0
  for _, tr in ipairs(F.tracks) do if tr.selected then n = n + 1 end end
  return n
end
function R.GetSelectedTrack(_, idx)
  local n = 0
  for _, tr in ipairs(F.tracks) do
    if tr.selected then
      if n == idx then return tr end
      n = n + 1
    end
  end
end
function R.CountTrackMediaItems(tr) return #tr.items end
function R.GetTrackMediaItem(tr, idx) return tr.items[idx + 1] end
function R.GetMediaItemTrack(it) return it.track end
function R.EnumProjects(idx, _) if idx == 0 then return "PROJ0", "/tmp/fake.rpp" end return nil end

function R.ValidatePtr2(_, p, _) return type(p) == "table" and not p.deleted end
function R.ValidatePtr(p, _) return type(p) == "table" and not p.deleted end

-- items and takes
function R.GetActiveTake(it) return it.takes[it.active] end
function R.CountTakes(it) return #it.takes end
function R.GetTake(it, idx) return it.takes[idx + 1] end
function R.GetMediaItemTake_Item(tk) return tk.item end
function R.GetMediaItemTake_Source(tk) return tk.source end
function R.TakeIsMIDI(tk) return tk.midi end
function R.TakeFX_GetCount(tk) return #tk.fx end
function R.TakeFX_GetEnabled(tk, i) return tk.fx[i + 1].enabled ~= false end
function R.GetTakeNumStretchMarkers(tk) return tk.stretch_markers end
function R.GetTakeName(tk) return tk.name end

function R.GetMediaItemInfo_Value(it, key) return it.values[key] or 0.0 end
function R.SetMediaItemInfo_Value(it, key, v) it.values[key] = v record("SetMediaItemInfo_Value", key, v) return true end
function R.GetMediaItemTakeInfo_Value(tk, key) return tk.values[key] or 0.0 end
function R.SetMediaItemTakeInfo_Value(tk, key, v)
  if tk.original_guard then error("the original take was modified: " .. key) end
  tk.values[key] = v
  return true
end

function R.GetSetMediaItemInfo_String(it, key, value, set)
  if key == "GUID" then
    if set then it.guid = value end
    return true, it.guid
  elseif key == "P_NOTES" then
    if set then it.notes = value end
    return true, it.notes
  end
  return false, ""
end

function R.GetSetMediaItemTakeInfo_String(tk, key, value, set)
  if set and tk.original_guard then error("the original take was modified: " .. key) end
  if key == "GUID" then
    if set then tk.guid = value end
    return true, tk.guid
  elseif key == "P_NAME" then
    if set then tk.name = value end
    return true, tk.name
  elseif key:sub(1, 6) == "P_EXT:" then
    local k = key:sub(7)
    if set then tk.ext[k] = value end
    return tk.ext[k] ~= nil, tk.ext[k] or ""
  end
  return false, ""
end

function R.AddTakeToMediaItem(it)
  local tk = make_take({}, it)
  it.takes[#it.takes + 1] = tk
  it.active = #it.takes -- the worst case: the new take becomes active
  record("AddTakeToMediaItem", it.guid)
  return tk
end
function R.SetMediaItemTake_Source(tk, src) tk.source = src return true end
function R.SetActiveTake(tk)
  local it = tk.item
  for i, t in ipairs(it.takes) do if t == tk then it.active = i end end
  record("SetActiveTake", tk.guid)
end
function R.PCM_Source_CreateFromFile(path)
  local h = read_wav_header(path) or {}
  return make_source({ file = path, type = h.samplerate and "WAVE" or "UNKNOWN", samplerate = h.samplerate or 0,
                       channels = h.channels or 0, length = h.length or 0, created_from_file = true })
end
function R.UpdateItemInProject(_) end
function R.UpdateArrange() end
function R.PreventUIRefresh(_) end

-- sources
function R.GetMediaSourceFileName(src, _) return src.file end
function R.GetMediaSourceType(src, _) return src.type end
function R.GetMediaSourceSampleRate(src) return src.samplerate end
function R.GetMediaSourceNumChannels(src) return src.channels end
function R.GetMediaSourceLength(src) return src.length, false end

-- audio accessor: a deterministic signal (channel c, frame n at rate sr -> a sine), so the test
-- can check that the rendered WAV is what the accessor gave
function R.CreateTakeAudioAccessor(tk)
  F.accessors = F.accessors + 1
  return { kind = "accessor", take = tk }
end
function R.DestroyAudioAccessor(aa) aa.destroyed = true F.accessors = F.accessors - 1 end
function R.GetAudioAccessorStartTime(_) return 0.0 end
function R.GetAudioAccessorEndTime(aa) return aa.take.item.values.D_LENGTH end
function R.GetAudioAccessorSamples(_, sr, ch, t0, n, buf)
  for i = 0, n - 1 do
    local t = t0 + i / sr
    for c = 0, ch - 1 do buf[i * ch + c + 1] = 0.5 * math.sin(2 * math.pi * 440 * (c + 1) * t) end
  end
  return 1
end
function R.new_array(size)
  local arr = {}
  for i = 1, size do arr[i] = 0.0 end
  arr.clear = function() for i = 1, size do arr[i] = 0.0 end end
  arr.table = function() local t = {} for i = 1, size do t[i] = arr[i] end return t end
  return arr
end

-- time selection
function R.GetSet_LoopTimeRange(set, _, s, e, _)
  if set then F.time_selection = { s, e } end
  return F.time_selection[1], F.time_selection[2]
end

-- ExtState
function R.GetExtState(section, key)
  local e = F.extstate[section .. "/" .. key]
  return e and e.value or ""
end
function R.SetExtState(section, key, value, persist)
  F.extstate[section .. "/" .. key] = { value = value, persist = persist and true or false }
end
function R.HasExtState(section, key) return F.extstate[section .. "/" .. key] ~= nil end
function R.DeleteExtState(section, key, _) F.extstate[section .. "/" .. key] = nil end

-- user interaction
function R.GetUserInputs(title, n, captions, defaults)
  F.inputs_asked[#F.inputs_asked + 1] = { title = title, n = n, captions = captions, defaults = defaults }
  local answer = table.remove(F.user_inputs, 1)
  if answer == nil then error("GetUserInputs called but the test queued no answer: " .. title) end
  if answer == false then return false, "" end
  if type(answer) == "table" then answer = table.concat(answer, "\n") end
  return true, answer
end
function R.ShowMessageBox(msg, title, typ)
  local ans = table.remove(F.mb_answers, 1) or 1
  F.messages[#F.messages + 1] = { title = title, msg = msg, type = typ, answer = ans }
  return ans
end
R.MB = R.ShowMessageBox
function R.ShowConsoleMsg(s) F.console[#F.console + 1] = s end
function R.ExecProcess(cmd, timeout) F.exec[#F.exec + 1] = { cmd = cmd, timeout = timeout } return "" end

-- undo
function R.Undo_BeginBlock()
  F.open_undo = F.open_undo + 1
  F.undo[#F.undo + 1] = { begin = true }
end
function R.Undo_EndBlock(desc, flags)
  if F.open_undo < 1 then error("Undo_EndBlock without Undo_BeginBlock") end
  F.open_undo = F.open_undo - 1
  F.undo[#F.undo + 1] = { desc = desc, flags = flags }
end

-- misc
function R.RecursiveCreateDirectory(path, _) os.execute('mkdir -p "' .. path .. '"') return 1 end
function R.file_exists(path) local f = io.open(path, "rb") if f then f:close() return true end return false end
function R.time_precise() return F.clock end
function R.GetProjectPath(_) return F.project_path end
function R.GetResourcePath() return "/tmp/reaper-resource" end
function R.GetOS() return "Other" end
function R.APIExists(name) return R[name] ~= nil end
function R.get_action_context() return false, F.script_path, 0, 1, -1, -1, -1 end
function R.defer(fn) F.deferred[#F.deferred + 1] = fn end
function R.atexit(fn) F.atexit[#F.atexit + 1] = fn end

---------------------------------------------------------------------------------------------
-- gfx: no-op drawing, recorded text, queued keys and mouse state set by the runner
---------------------------------------------------------------------------------------------

local G = { w = 760, h = 260, x = 0, y = 0, mouse_x = 0, mouse_y = 0, mouse_cap = 0 }
function G.init(title, w, h) F.gfx_open = true F.gfx_title = title G.w, G.h = w or G.w, h or G.h end
function G.quit() F.gfx_open = false end
function G.getchar()
  if not F.gfx_open then return -1 end
  return table.remove(F.keys, 1) or 0
end
function G.set() end
function G.rect() end
function G.line() end
function G.update() end
function G.setfont() end
function G.measurestr(s) return #s * 7, 14 end
function G.drawstr(s) F.gfx_text[#F.gfx_text + 1] = s end

---------------------------------------------------------------------------------------------
-- Driving and dumping
---------------------------------------------------------------------------------------------

-- Runs the callbacks deferred during the previous cycle, like REAPER does once per UI tick.
function F.run_defer_cycle()
  local fns = F.deferred
  F.deferred = {}
  F.clock = F.clock + F.dt
  F.gfx_text = {}
  for _, fn in ipairs(fns) do fn() end
  return #fns
end

-- A click: press on the target's centre for one cycle, release on the next (scripts act on release).
function F.click(target_id)
  local targets = AIEDIT_HIT_TARGETS or {}
  for _, t in ipairs(targets) do
    if t.id == target_id then
      G.mouse_x, G.mouse_y = t.x + t.w / 2, t.y + t.h / 2
      G.mouse_cap = 1
      F.run_defer_cycle()
      G.mouse_cap = 0
      F.run_defer_cycle()
      return true
    end
  end
  error("no clickable target " .. tostring(target_id))
end

local function dump_take(tk, lib)
  local ext = lib.object()
  for k, v in pairs(tk.ext) do ext[k] = v end
  local src = tk.source and lib.object({ file = tk.source.file, type = tk.source.type,
    samplerate = tk.source.samplerate, channels = tk.source.channels, length = tk.source.length }) or lib.null
  return { guid = tk.guid, name = tk.name, ext = ext, source = src, values = tk.values }
end

function F.dump(lib)
  local tracks = lib.array()
  for _, tr in ipairs(F.tracks) do
    local items = lib.array()
    for _, it in ipairs(tr.items) do
      local takes = lib.array()
      for _, tk in ipairs(it.takes) do takes[#takes + 1] = dump_take(tk, lib) end
      local active = it.takes[it.active]
      items[#items + 1] = { guid = it.guid, values = it.values, takes = takes,
                            active_take = active and active.guid or lib.null }
    end
    tracks[#tracks + 1] = { name = tr.name, items = items }
  end
  local ext = lib.object()
  for k, e in pairs(F.extstate) do ext[k] = { value = e.value, persist = e.persist } end
  local undo = lib.array()
  for _, u in ipairs(F.undo) do undo[#undo + 1] = u.begin and "begin" or ("end:" .. u.desc) end
  local msgs = lib.array()
  for _, m in ipairs(F.messages) do msgs[#msgs + 1] = m end
  return {
    tracks = tracks, extstate = ext, undo = undo, open_undo = F.open_undo, messages = msgs,
    console = lib.array(F.console), exec = lib.array(F.exec), gfx_open = F.gfx_open,
    gfx_text = lib.array(F.gfx_text), pending_defer = #F.deferred, accessors_open = F.accessors,
    inputs_asked = lib.array(F.inputs_asked), jobs_active = AIEDIT_JOBS_ACTIVE or lib.null,
  }
end

F.reaper, F.gfx = R, G
return F
