--[[
A fake `reaper` and `gfx` for running the aiedit REAPER scripts under plain Lua 5.4.

The project is data: tracks -> items -> takes -> sources, the time selection, ExtState, queued
answers for GetUserInputs / ShowMessageBox. Every call that changes the project or talks to the
user is recorded, and `F.dump()` returns the whole state for the test to check.
defer callbacks are not run by themselves: the runner drives them (`F.run_defer_cycle()`).

Strict where REAPER is, so that scripts which only work in a lenient fake fail here too. Each modelled
behaviour cites the REAPER ReaScript API text (reaper.fm/sdk/reascript/reascripthelp.html) it follows:

- GetUserInputs: "You can supply special extra information via additional caption fields: extrawidth=XXX to
  increase text field width, separator=X to use a different separator for returned fields." The separator
  applies to the *returned fields* only; captions are always split on commas, so a caption holding a comma
  shifts every later label. The fake splits the same way and raises when the caption count differs from
  num_inputs (REAPER would show wrong labels silently).
- Projects (tabs): every ReaProject* has its own undo history and dirty flag. Undo_BeginBlock/EndBlock
  "operate on the active project only (if multiple tabs are open)"; Undo_BeginBlock2/Undo_EndBlock2(proj, ...)
  on the given one; MarkProjectDirty(proj) "Marks project as dirty (needing save) if 'undo/prompt to save' is
  enabled in preferences".
  GetItemProjectContext(item) returns the item's project. EnumProjects(idx) lists the open tabs.
- PCM_Source_CreateFromFile(filename) ("See PCM_Source_CreateFromFileEx") returns nil when the file cannot be
  opened as media (scripts that load files check `if not src`), and
  SetMediaItemTake_Source with a nil source raises (ReaScript checks pointer arguments).
- Take envelopes: GetTakeEnvelopeByName(take, "Volume"|"Pan"|"Mute"|"Pitch"), CountEnvelopePoints(env).
- Relaunch: running a script whose previous instance still has deferred work brings up "ReaScript task
  control" unless the instance called set_action_options (REAPER 7.03+: "flag&1: script will auto-terminate if
  re-launched while already running; flag&2: if (flag&1) is set, script will re-launch after auto-terminating;
  flag&4: set script toggle state on; flag&8: set script toggle state off"). The fake models the user pressing
  "Terminate instances": the old instance stops (its atexit runs, its window closes).
  AddRemoveReaScript(add, sectionID, scriptfn, commit) returns the action's command id; Main_OnCommand runs it.
- Automatic undo: "Undo points are created for ReaScripts by default. To prevent the automatic addition of an
  undo point, a script can call defer()": a run that neither defers nor closes an undo block gets one.
- Take audio accessor: "GetAudioAccessorSamples ... time_startpos" is in the take's own time base (0 = item
  start) and the samples are what the take plays: the fake's signal is a function of the *source* time
  D_STARTOFFS + t * D_PLAYRATE, so a render read with the wrong time base is caught.
- ProjExtState (SetProjExtState/GetProjExtState) is stored per project and saved with it; GetProjectPathEx(proj)
  gives the project's media folder.
- ExecProcess(cmdline, timeoutmsec): "timeoutmsec is -1 for no wait/terminate, -2 for no wait and minimize";
  the fake records the timeout and refuses anything but an integer.
- io.open is wrapped to count reads per file (the jobs window must not re-read daemon.json every frame).

Round 2 (issue 18): behaviour a real session on Windows or macOS shows, each selectable per scenario.
- REAPER versions (scenario "reaper_version", default "7.27"): GetAppVersion() returns e.g. "7.08/win64". API
  functions exist from the version that added them: "InsertTrackInProject(proj, idx, flags)" (7.18; before it only
  "InsertTrackAtIndex(idx, wantDefaults)", which inserts into the active project), "set_action_options" (7.03).
  Fixed item lanes are REAPER 7 ("I_FREEMODE : int * : 1=track free item positioning enabled, 2=track fixed lanes
  enabled"): on a REAPER 6 set, I_FREEMODE 2 is plain free positioning and the lane keys (I_NUMFIXEDLANES,
  C_LANEPLAYS:N, item I_FIXEDLANE) are unknown, so Set* returns false and nothing changes: items stack and play.
  "UpdateTimeline" exists in every modelled set (reascripthelp 6.24 lists it), so it says nothing about lanes.
- Ext-state key case (scenario "ext_keys_upper": true): public probes of "EnumProjExtState(proj, extname, idx)"
  report keys upper-cased; whether real REAPER does is not settled (docs/reaper.md, first-run checklist). With the
  flag, keys are stored and enumerated upper-cased and Get/SetProjExtState match keys case-insensitively.
- Project tabs: File > Open in the same tab keeps the ReaProject* and replaces its content (step "open_in_tab");
  "EnumProjects(idx, projfn)" returns the tab's project file name ("" while it was never saved). A closed tab's
  pointer fails "ValidatePtr2(proj, pointer, ctypename)" with "ReaProject*" and any call that gets it raises.
- Razor edits: "P_RAZOREDITS_EXT : list of razor edit areas, as comma-separated sets of space-separated tuples of
  start time, end time, optional: envelope GUID string, fixed/fipm top y-position, fixed/fipm bottom y-position"
  (REAPER 7). "P_RAZOREDITS" keeps "space-separated triples of start time, end time, and envelope GUID string":
  the lane extent is only in the _EXT form. Items: "F_FREEMODE_Y : free item positioning or fixed lane
  Y-position. 0=top of track, 1.0=bottom of track", "F_FREEMODE_H : ... fixed lane height" (lanes of equal height).
- GetUserInputs defaults are parsed quote-aware (what the issue reproduced): a quote character (' or ") opens a
  quoted run in which the separator does not split, so an odd number of quotes puts every later default into the
  field that holds the lone quote. Whether REAPER also strips balanced quotes is not modelled (not known).
- A modal dialog blocks every defer loop while it is open: scenario "dialog_seconds" advances the clock by that
  much per GetUserInputs (the user typing), so heartbeats written by deferred scripts go stale meanwhile.
- ExecProcess returns nil "on total failure" (scenario "exec_fails": true: the program was not found).
- Track mute: "B_MUTE : bool * : muted".

Round 3 (issue 24): transport, solo, selection and the rest of what the jobs window touches.
- Transport: "GetPlayState()": "&1=playing, &2=pause, &=4 is recording" (scenario "play_state"; step
  "set_play_state"); "GetPlayPosition()" (latency-compensated position: the fake's plays on from where play started,
  one "dt" per defer cycle); "OnPlayButton()", "OnStopButton()" and their ...Ex(proj) forms; "SetEditCurPos(time,
  moveview, seekplay)" / "GetCursorPosition()"; Main_OnCommand(40044) is "Transport: Play/stop" (toggles).
- Track solo: "I_SOLO : int * : soloed, 0=not soloed, 1=soloed, 2=soloed in place, 5=safe soloed, 6=safe soloed in
  place". Item: "B_MUTE : bool * : muted (item solo overrides)", "B_ALLTAKESPLAY : bool * : all takes play"; the
  item values the scripts copy (D_VOL, fades, fade shapes, D_SNAPOFFSET, B_LOOPSRC) are kept as given.
- Item selection: "SetMediaItemSelected(item, selected)", "IsMediaItemSelected(item)", "SelectAllMediaItems(proj,
  selected)"; "SetOnlyTrackSelected(track)". Main_OnCommand(40129) is "Take: Delete active take from items" (the
  selected items of the active project); 40913 "Track: Vertical scroll selected tracks into view" is recorded.
- Deleting: "DeleteTrackMediaItem(tr, it)", "DeleteTrack(tr)". "TrackList_AdjustWindows(isMinor)" ("Updates the
  TCP and optionally the MCP. Helpful to use after mass-changes to the tracks") is counted.
- Sources: "PCM_Source_Destroy(src)" ("Deletes a PCM_source -- be sure that you remove any project reference
  before deleting a source"): the fake counts sources created, destroyed and set on a take; a source neither set
  nor destroyed is a leak (dump "sources_leaked").
- Fixed lane names: "P_LANENAME:n : char * : lane name (returns NULL for non-fixed-lane-tracks)".
- Tempo map: "TimeMap_GetTimeSigAtTime(proj, time)" returns "timesig_num, timesig_denom, tempo" of the effective
  marker at that time (scenario "tempo_map": a list of {time, bpm, num, denom}, default 120 bpm 4/4).
- Ext-state values: a project ext-state value is known to hold about 4 KB (community-documented, not in the API
  text): the fake keeps the first 4095 bytes of a longer one, so a record that grows past it stops decoding.
  Scenario "ext_keys_enum_upper": EnumProjExtState gives keys back upper-cased while Get/SetProjExtState keep
  matching the exact key (the other half of the unsettled key-case question).
- Lua 5.3 (REAPER 6; scenario "lua_version": "5.3"): math.random starts from the same seed in every session unless
  the script calls math.randomseed (5.4 seeds it randomly at start).
- GetUserInputs reads parentheses in its defaults like quotes (an unclosed "(" swallows every later default).
]]

local F = { log = {}, messages = {}, console = {}, exec = {}, undo = {}, inputs_asked = {},
            deferred = {}, atexit = {}, gfx_frames = 0, gfx_text = {}, gfx_open = false,
            clock = 0.0, dt = 0.5, next_guid = 1, accessors = 0, refresh_depth = 0,
            counts = {}, opens = {}, task_control = {}, actions = {}, next_cmd = 50000,
            instances = {}, current = nil, toggle = {}, commands = {}, sources = { made = 0, destroyed = 0,
            used = 0 }, play = { state = 0, pos = 0.0, started = nil }, edit_cursor = 0.0 }

-- Count reads per path (daemon.json polling cost) without changing what io.open does.
local real_open = io.open
io.open = function(path, mode) -- luacheck: ignore 122
  F.opens[path] = (F.opens[path] or 0) + 1
  return real_open(path, mode)
end

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

local function make_envelopes(spec)
  local envs = {}
  for name, e in pairs(spec or {}) do envs[name] = { kind = "envelope", name = name, points = e.points or 0 } end
  return envs
end

local function make_take(spec, item)
  local tk = { kind = "take", item = item, guid = spec.guid or guid(), name = spec.name or "",
               ext = spec.ext or {}, fx = spec.fx or {}, stretch_markers = spec.stretch_markers or 0,
               midi = spec.midi or false, envelopes = make_envelopes(spec.envelopes),
               values = { D_STARTOFFS = spec.startoffs or 0.0, D_PLAYRATE = spec.playrate or 1.0,
                          D_PITCH = spec.pitch or 0.0, B_PPITCH = spec.preserve_pitch or 1,
                          I_PITCHMODE = -1, D_VOL = spec.vol or 1.0, D_PAN = 0.0, I_CHANMODE = 0 } }
  tk.source = spec.source and make_source(spec.source) or nil
  -- takes from the scenario are the user's originals: any write to them is an error
  -- (AI takes an earlier session imported carry "aiedit_job": the scripts may switch, keep or delete those)
  tk.original_guard = (spec.from_scenario and not (spec.ext and spec.ext.aiedit_job)) or false
  if tk.source and tk.source.type == "MIDI" then tk.midi = true end
  return tk
end

local function make_item(spec, track)
  local it = { kind = "item", track = track, guid = spec.guid or guid(), selected = spec.selected or false,
               notes = spec.notes or "", takes = {}, active = (spec.active_take or 1),
               values = { D_POSITION = spec.position or 0.0, D_LENGTH = spec.length or 1.0,
                          I_FIXEDLANE = spec.lane } }
  for k, v in pairs(spec.values or {}) do it.values[k] = v end -- fades, volume, B_MUTE, B_ALLTAKESPLAY, ...
  for _, tspec in ipairs(spec.takes or {}) do
    tspec.from_scenario = true
    it.takes[#it.takes + 1] = make_take(tspec, it)
  end
  if #it.takes == 0 then it.active = 0 end
  return it
end

local function make_track(tspec, proj)
  local tr = { kind = "track", project = proj, name = tspec.name or "", selected = tspec.selected or false,
               items = {}, guid = tspec.guid or guid(), razor = tspec.razor or "", razor_ext = tspec.razor_ext,
               new = tspec.new, freemode = tspec.freemode, lanes = tspec.lanes, mute = tspec.mute or 0,
               solo = tspec.solo or 0, lane_names = {} }
  if tr.freemode == 2 then
    tr.lanes = tr.lanes or 1
    tr.laneplays = { [0] = 1 }
    for i, v in ipairs(tspec.laneplays or {}) do tr.laneplays[i - 1] = v end
  end
  for _, ispec in ipairs(tspec.items or {}) do tr.items[#tr.items + 1] = make_item(ispec, tr) end
  return tr
end

-- Ext-state keys as the session stores them: upper-cased with scenario "ext_keys_upper" (see the header).
local function ext_key(section, key)
  if F.ext_keys_upper then key = key:upper() end
  return section .. "/" .. key
end

-- "about 4 KB" per value (see the header): longer values are cut.
local EXT_VALUE_MAX = 4095

-- One project tab. The first scenario layout (top-level "tracks") is project 1. `into`: an open tab whose
-- ReaProject* is kept (File > Open in the same tab).
local function make_project(pspec, idx, into)
  local proj = into or {}
  for k in pairs(proj) do proj[k] = nil end
  local fields = { kind = "project", index = idx, tracks = {}, undo = {}, open_undo = 0, dirty = false,
                 path = pspec.project_path or "/tmp", file = pspec.file or string.format("/tmp/fake%d.rpp", idx),
                 media = pspec.media_path, projext = {}, time_selection = pspec.time_selection or { 0, 0 } }
  for k, v in pairs(fields) do proj[k] = v end
  for k, v in pairs(pspec.projextstate or {}) do
    local section, key = k:match("^([^/]+)/(.*)$")
    proj.projext[ext_key(section, key)] = v
  end
  for _, tspec in ipairs(pspec.tracks or {}) do proj.tracks[#proj.tracks + 1] = make_track(tspec, proj) end
  return proj
end

function F.load(scenario)
  F.scenario = scenario
  F.ext_keys_upper = scenario.ext_keys_upper or false
  F.dialog_seconds = scenario.dialog_seconds or 0
  F.exec_fails = scenario.exec_fails or false
  F.ext_keys_enum_upper = scenario.ext_keys_enum_upper or false
  F.play.state = scenario.play_state or 0
  F.tempo_map = scenario.tempo_map or { { time = 0, bpm = 120, num = 4, denom = 4 } }
  if scenario.lua_version == "5.3" then math.randomseed(0) end -- Lua 5.3: the same sequence every session
  F.resource_path = scenario.resource_path or "/tmp/reaper-resource"
  if scenario.imgui then
    scenario.imgui_builtin_path = scenario.imgui_builtin_path or ((F.here or "./") .. "imgui_builtin")
    F.imgui_driver = dofile((F.here or "./") .. "fake_imgui.lua")
    F.imgui_driver.install(F, F.reaper, scenario)
  end
  F.apply_version(scenario.reaper_version or "7.27")
  local specs = scenario.projects or { { tracks = scenario.tracks, project_path = scenario.project_path,
    time_selection = scenario.time_selection, projextstate = scenario.projextstate,
    media_path = scenario.media_path } }
  F.projects = {}
  for i, ps in ipairs(specs) do F.projects[i] = make_project(ps, i) end
  F.active = F.projects[scenario.active_project or 1]
  F.extstate = {}
  for k, v in pairs(scenario.extstate or {}) do F.extstate[k] = { value = v, persist = true } end
  F.user_inputs = scenario.user_inputs or {}
  F.mb_answers = scenario.mb_answers or {}
  F.keys = {}
  -- "getenv": {"NAME": "value" | {"hex": "433a5c..."}}: what os.getenv returns in this REAPER. On Windows that is
  -- the ANSI code page form of the value (hex gives its exact bytes); names not listed come from the real process.
  if scenario.getenv then
    local real = F.real_getenv or os.getenv
    F.real_getenv = real
    os.getenv = function(name) -- luacheck: ignore 122 (the fake replaces what REAPER provides)
      local v = scenario.getenv[name]
      if v == nil then return real(name) end
      if type(v) == "table" then return (v.hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end
      if v == false then return nil end
      return v
    end
  end
end

-- proj argument as ReaScript takes it: 0 or nil = the active project, else a ReaProject*.
local function P(proj)
  if proj == nil or proj == 0 then return F.active end
  if type(proj) ~= "table" or proj.kind ~= "project" then error("expected a ReaProject*, got " .. tostring(proj)) end
  if proj.deleted then error("ReaProject* of a closed project used") end
  return proj
end

local function items_of(proj)
  local out = {}
  for _, tr in ipairs(P(proj).tracks) do for _, it in ipairs(tr.items) do out[#out + 1] = it end end
  return out
end

local function all_items()
  local out = {}
  for _, proj in ipairs(F.projects) do for _, it in ipairs(items_of(proj)) do out[#out + 1] = it end end
  return out
end

function F.find_item(g)
  for _, it in ipairs(all_items()) do if it.guid == g then return it end end
end

function F.delete_item(g)
  for _, proj in ipairs(F.projects) do
    for _, tr in ipairs(proj.tracks) do
      for i, it in ipairs(tr.items) do
        if it.guid == g then table.remove(tr.items, i) it.deleted = true return true end
      end
    end
  end
  return false
end

-- The user edits an item between sessions or while jobs run (trim, move).
function F.edit_item(g, changes)
  local it = assert(F.find_item(g), "no item " .. g)
  for k, v in pairs(changes.item or {}) do it.values[k] = v end
  local tk = it.takes[1]
  for k, v in pairs(changes.take or {}) do tk.values[k] = v end
end

function F.switch_project(idx) F.active = F.projects[idx] end

-- File > Open in tab idx: the same ReaProject* now holds another project (its items, file and ext state).
function F.open_in_tab(idx, pspec)
  make_project(pspec, idx, F.projects[idx])
end

-- File > Save project (as): the tab's project now has a file (and its media folder next to it).
function F.save_project(idx, file, media)
  local proj = F.projects[idx]
  proj.file = file
  proj.path = file:match("^(.*)/[^/]*$") or proj.path
  if media then proj.media = media end
end

-- The user closes a project tab: its pointer is no longer valid and EnumProjects skips it.
function F.close_project(idx)
  local proj = table.remove(F.projects, idx)
  proj.deleted = true
  if F.active == proj then F.active = F.projects[1] end
end

---------------------------------------------------------------------------------------------
-- reaper.*
---------------------------------------------------------------------------------------------

local R = {}

local function record(name, ...)
  F.log[#F.log + 1] = { fn = name, args = { ... } }
end

local function count(name) F.counts[name] = (F.counts[name] or 0) + 1 end

-- project / selection
function R.CountSelectedMediaItems(proj)
  local n = 0
  for _, it in ipairs(items_of(proj)) do if it.selected then n = n + 1 end end
  return n
end
function R.GetSelectedMediaItem(proj, idx)
  local n = 0
  for _, it in ipairs(items_of(proj)) do
    if it.selected then
      if n == idx then return it end
      n = n + 1
    end
  end
end
function R.CountMediaItems(proj) return #items_of(proj) end
function R.GetMediaItem(proj, idx) count("GetMediaItem") return items_of(proj)[idx + 1] end
function R.CountTracks(proj) return #P(proj).tracks end
function R.GetTrack(proj, idx) return P(proj).tracks[idx + 1] end
function R.CountSelectedTracks(proj)
  local n = 0
  for _, tr in ipairs(P(proj).tracks) do if tr.selected then n = n + 1 end end
  return n
end
function R.GetSelectedTrack(proj, idx)
  local n = 0
  for _, tr in ipairs(P(proj).tracks) do
    if tr.selected then
      if n == idx then return tr end
      n = n + 1
    end
  end
end
function R.CountTrackMediaItems(tr) return #tr.items end
function R.GetTrackMediaItem(tr, idx) return tr.items[idx + 1] end
function R.GetMediaItemTrack(it) return it.track end
function R.GetItemProjectContext(it) return it.track.project end
-- Fixed item lanes (REAPER 7): "I_FREEMODE : int * : 1=track free item positioning enabled, 2=track fixed
-- lanes enabled (call UpdateTimeline() after changing)"; "I_NUMFIXEDLANES : int * : number of track fixed
-- lanes"; "C_LANEPLAYS:N : char * : on fixed lane tracks, 0=lane does not play, 1=lane plays exclusively,
-- 2=lane plays and other lanes also play". Turning lanes on puts every existing item in lane 0, which plays.
function R.GetMediaTrackInfo_Value(tr, key)
  if key == "B_MUTE" then return tr.mute end
  if key == "I_SOLO" then return tr.solo end
  if F.version < 7 and (key == "I_NUMFIXEDLANES" or key:sub(1, 12) == "C_LANEPLAYS:") then return 0 end
  if key == "IP_TRACKNUMBER" then
    for i, t in ipairs(tr.project.tracks) do if t == tr then return i end end
  elseif key == "I_FREEMODE" then return tr.freemode or 0
  elseif key == "I_NUMFIXEDLANES" then return tr.lanes or 1
  elseif key:sub(1, 12) == "C_LANEPLAYS:" then return (tr.laneplays or {})[tonumber(key:sub(13))] or 0
  end
  return 0
end
function R.SetMediaTrackInfo_Value(tr, key, v)
  if F.version < 7 then -- no fixed lanes: 2 is plain free positioning, lane keys are unknown
    if key == "I_FREEMODE" then
      tr.freemode = v ~= 0 and 1 or 0
      record("SetMediaTrackInfo_Value", key, v)
      return true
    end
    if key == "I_NUMFIXEDLANES" or key:sub(1, 12) == "C_LANEPLAYS:" then return false end
  end
  if key == "B_MUTE" then
    tr.mute = v
  elseif key == "I_SOLO" then
    tr.solo = v
  elseif key == "I_FREEMODE" then
    if v == 2 and tr.freemode ~= 2 then
      tr.lanes, tr.laneplays = 1, { [0] = 1 }
      for _, it in ipairs(tr.items) do it.values.I_FIXEDLANE = 0 end
    end
    tr.freemode = v
  elseif key == "I_NUMFIXEDLANES" then
    if tr.freemode ~= 2 then error("I_NUMFIXEDLANES on a track without fixed lanes") end
    tr.lanes = math.tointeger(v) or error("lane count must be whole")
  elseif key:sub(1, 12) == "C_LANEPLAYS:" then
    local lane = tonumber(key:sub(13))
    if tr.freemode ~= 2 or lane >= tr.lanes then error("C_LANEPLAYS for a lane that does not exist") end
    tr.laneplays[lane] = v
  else
    error("SetMediaTrackInfo_Value: " .. key .. " is not modelled")
  end
  record("SetMediaTrackInfo_Value", key, v)
  return true
end
function R.UpdateTimeline() end
-- "GetAppVersion()": e.g. "7.08/win64"
function R.GetAppVersion() return F.version_string .. "/linux-x86_64" end
function R.EnumProjects(idx, _)
  if idx == -1 then return F.active, F.active.file end
  local proj = F.projects[idx + 1]
  if not proj then return nil, "" end
  return proj, proj.file
end
-- "InsertTrackAtIndex(idx, wantDefaults)": into the active project only
function R.InsertTrackAtIndex(idx, _)
  local proj = F.active
  table.insert(proj.tracks, idx + 1, make_track({ name = "", new = true }, proj))
  record("InsertTrackAtIndex", idx)
end
-- "InsertTrackInProject(proj, idx, flags)": inserts a track at idx (0-based) in any project
function R.InsertTrackInProject(proj, idx, _)
  local p = P(proj)
  table.insert(p.tracks, idx + 1, make_track({ name = "", new = true }, p))
  record("InsertTrackInProject", idx)
end
function R.GetSetMediaTrackInfo_String(tr, key, value, set)
  if key == "P_NAME" then
    if set then tr.name = value end
    return true, tr.name
  elseif key == "P_RAZOREDITS" then
    -- "string of start/end/envelope-GUID triples: start end "{GUID}" ... ; GUID "" for media items
    if set then tr.razor, tr.razor_ext = value, nil end
    if tr.razor_ext then -- the same areas without their lane extents
      local triples = {}
      for tuple in tr.razor_ext:gmatch("[^,]+") do
        local a, b, g = tuple:match('^%s*(%S+)%s+(%S+)%s*("?[^"]*"?)')
        triples[#triples + 1] = string.format('%s %s %s', a, b, g ~= "" and g or '""')
      end
      return true, table.concat(triples, " ")
    end
    return true, tr.razor
  elseif key == "P_RAZOREDITS_EXT" then
    if F.version < 7 then return false, "" end
    if set then tr.razor_ext = value end
    if tr.razor_ext then return true, tr.razor_ext end
    local tuples = {}
    for a, b, g in (tr.razor or ""):gmatch('(%S+)%s+(%S+)%s+("[^"]*")') do
      tuples[#tuples + 1] = a .. " " .. b .. " " .. g
    end
    return true, table.concat(tuples, ",")
  elseif key == "GUID" then
    return true, tr.guid
  elseif key:sub(1, 11) == "P_LANENAME:" then
    local lane = tonumber(key:sub(12))
    if F.version < 7 or tr.freemode ~= 2 or not lane or lane >= (tr.lanes or 1) then return false, "" end
    if set then tr.lane_names[lane] = value end
    return true, tr.lane_names[lane] or ""
  end
  return false, ""
end
function R.AddMediaItemToTrack(tr)
  local it = make_item({}, tr)
  tr.items[#tr.items + 1] = it
  record("AddMediaItemToTrack", tr.name)
  return it
end

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
function R.GetTakeEnvelopeByName(tk, name) return tk.envelopes[name] end
function R.CountTakeEnvelopes(tk)
  local n = 0
  for _ in pairs(tk.envelopes) do n = n + 1 end
  return n
end
function R.CountEnvelopePoints(env) return env.points end

function R.GetMediaItemInfo_Value(it, key)
  local tr = it.track
  if (key == "F_FREEMODE_Y" or key == "F_FREEMODE_H") and tr.freemode == 2 and F.version >= 7 then
    local n = math.max(1, tr.lanes or 1) -- fixed lanes of equal height
    if key == "F_FREEMODE_H" then return 1.0 / n end
    return (it.values.I_FIXEDLANE or 0) / n
  end
  if key == "I_FIXEDLANE" and F.version < 7 then return 0.0 end
  return it.values[key] or 0.0
end
function R.SetMediaItemInfo_Value(it, key, v)
  if key == "I_FIXEDLANE" and F.version < 7 then return false end
  if key == "I_FIXEDLANE" and (it.track.freemode ~= 2 or v >= (it.track.lanes or 1)) then
    error("I_FIXEDLANE " .. v .. ": the track has no such fixed lane")
  end
  it.values[key] = v
  record("SetMediaItemInfo_Value", key, v)
  return true
end
function R.SetMediaItemPosition(it, v, _) it.values.D_POSITION = v return true end
function R.SetMediaItemLength(it, v, _) it.values.D_LENGTH = v return true end
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
function R.SetMediaItemTake_Source(tk, src)
  if type(src) ~= "table" or src.kind ~= "source" then
    error("SetMediaItemTake_Source: argument 2: expected PCM_source*")
  end
  if src.destroyed then error("SetMediaItemTake_Source: a destroyed source") end
  if src.created_from_file and not src.used then F.sources.used = F.sources.used + 1 end
  src.used = true
  tk.source = src
  return true
end
function R.SetActiveTake(tk)
  local it = tk.item
  for i, t in ipairs(it.takes) do if t == tk then it.active = i end end
  record("SetActiveTake", tk.guid)
end
-- nil for a file that cannot be opened as audio (missing, empty, not a WAV the fake can read)
function R.PCM_Source_CreateFromFile(path)
  local h = read_wav_header(path)
  if not h or not h.samplerate then return nil end
  F.sources.made = F.sources.made + 1
  return make_source({ file = path, type = "WAVE", samplerate = h.samplerate,
                       channels = h.channels or 0, length = h.length or 0, created_from_file = true })
end
function R.UpdateItemInProject(_) end
function R.UpdateArrange() end
function R.PreventUIRefresh(n)
  F.refresh_depth = F.refresh_depth + n
  if F.refresh_depth < 0 then error("PreventUIRefresh went below 0") end
end

-- sources
function R.GetMediaSourceFileName(src, _) return src.file end
function R.GetMediaSourceType(src, _) return src.type end
function R.GetMediaSourceSampleRate(src) return src.samplerate end
function R.GetMediaSourceNumChannels(src) return src.channels end
function R.GetMediaSourceLength(src) return src.length, false end

-- Take audio accessor: time 0 is the item start; the signal is a function of the source time the take
-- plays at that moment (D_STARTOFFS + t * D_PLAYRATE), read when the samples are asked for.
function R.CreateTakeAudioAccessor(tk)
  F.accessors = F.accessors + 1
  return { kind = "accessor", take = tk }
end
function R.DestroyAudioAccessor(aa) aa.destroyed = true F.accessors = F.accessors - 1 end
function R.GetAudioAccessorStartTime(_) return 0.0 end
function R.GetAudioAccessorEndTime(aa) return aa.take.item.values.D_LENGTH end
function R.GetAudioAccessorSamples(aa, sr, ch, t0, n, buf)
  if aa.destroyed then error("audio accessor used after DestroyAudioAccessor") end
  count("GetAudioAccessorSamples")
  local offs, rate = aa.take.values.D_STARTOFFS, aa.take.values.D_PLAYRATE
  for i = 0, n - 1 do
    local st = offs + (t0 + i / sr) * rate
    for c = 0, ch - 1 do buf[i * ch + c + 1] = 0.5 * math.sin(2 * math.pi * 440 * (c + 1) * st) end
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

-- time selection (of the active project)
function R.GetSet_LoopTimeRange(set, _, s, e, _)
  if set then F.active.time_selection = { s, e } end
  return F.active.time_selection[1], F.active.time_selection[2]
end
function R.GetSet_LoopTimeRange2(proj, set, _, s, e, _)
  local p = P(proj)
  if set then p.time_selection = { s, e } end
  return p.time_selection[1], p.time_selection[2]
end

-- ExtState (global) and ProjExtState (saved with each project)
function R.GetExtState(section, key)
  count("GetExtState")
  local e = F.extstate[section .. "/" .. key]
  return e and e.value or ""
end
function R.SetExtState(section, key, value, persist)
  count("SetExtState")
  F.extstate[section .. "/" .. key] = { value = value, persist = persist and true or false }
end
function R.HasExtState(section, key) return F.extstate[section .. "/" .. key] ~= nil end
function R.DeleteExtState(section, key, _) count("DeleteExtState") F.extstate[section .. "/" .. key] = nil end
function R.SetProjExtState(proj, section, key, value)
  count("SetProjExtState")
  local p = P(proj)
  p.enum_cache = nil
  if key == "" then -- "If key is NULL or "", all extended data for that section will be deleted"
    for k in pairs(p.projext) do if k:sub(1, #section + 1) == section .. "/" then p.projext[k] = nil end end
    return 0
  end
  if #value > EXT_VALUE_MAX then value = value:sub(1, EXT_VALUE_MAX) end
  p.projext[ext_key(section, key)] = (value ~= "" and value or nil)
  return 1
end
function R.GetProjExtState(proj, section, key)
  count("GetProjExtState")
  local v = P(proj).projext[ext_key(section, key)]
  return v and 1 or 0, v or ""
end
function R.EnumProjExtState(proj, section, idx)
  local p = P(proj)
  count("EnumProjExtState")
  local keys = p.enum_cache and p.enum_cache[section]
  if not keys then -- the key list is rebuilt only after a write (the fake's own cost is not the script's)
    keys = {}
    for k in pairs(p.projext) do
      if k:sub(1, #section + 1) == section .. "/" then keys[#keys + 1] = k:sub(#section + 2) end
    end
    table.sort(keys)
    p.enum_cache = p.enum_cache or {}
    p.enum_cache[section] = keys
  end
  local k = keys[idx + 1]
  if not k then return false, "", "" end
  return true, F.ext_keys_enum_upper and k:upper() or k, p.projext[section .. "/" .. k]
end

-- user interaction
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local j = s:find(sep, i, true)
    if not j then out[#out + 1] = s:sub(i) return out end
    out[#out + 1] = s:sub(i, j - 1)
    i = j + #sep
  end
end

-- The defaults as the dialog reads them: a quote opens a run that only the same quote closes, and the separator
-- does not split inside it (an unclosed quote swallows every later default).
local function split_quoted(s, sep)
  local out, cur, q = {}, {}, nil
  for i = 1, #s do
    local c = s:sub(i, i)
    if q then
      if c == q then q = nil end
      cur[#cur + 1] = c
    elseif c == '"' or c == "'" or c == "(" then
      q = c == "(" and ")" or c
      cur[#cur + 1] = c
    elseif c == sep then
      out[#out + 1] = table.concat(cur)
      cur = {}
    else
      cur[#cur + 1] = c
    end
  end
  out[#out + 1] = table.concat(cur)
  return out
end

function R.GetUserInputs(title, n, captions, defaults)
  -- captions always split on ","; "separator=X" and "extrawidth=N" are options among them
  local caps, sep = {}, ","
  for _, c in ipairs(split(captions, ",")) do
    if c:sub(1, 10) == "separator=" then sep = c:sub(11, 11)
    elseif c:sub(1, 11) ~= "extrawidth=" then caps[#caps + 1] = c end -- extrawidth: only the width
  end
  if sep == "" then sep = "," end
  if n > 16 then error("GetUserInputs: at most 16 fields") end
  if #caps ~= n then
    error(string.format("GetUserInputs: %d captions for %d fields (a caption holds a comma?): %s", #caps, n,
      table.concat(caps, " | ")))
  end
  F.clock = F.clock + F.dialog_seconds -- the modal dialog blocks every defer loop while the user types
  local vals = split_quoted(defaults, sep)
  if #vals > n then
    error(string.format("GetUserInputs: defaults split into %d values for %d fields", #vals, n))
  end
  F.inputs_asked[#F.inputs_asked + 1] = { title = title, n = n, captions = captions, defaults = defaults,
                                          labels = caps, values = vals, separator = sep }
  local answer = table.remove(F.user_inputs, 1)
  if answer == nil then error("GetUserInputs called but the test queued no answer: " .. title) end
  if answer == false then return false, "" end
  if type(answer) == "table" then answer = table.concat(answer, sep) end
  return true, answer
end
function R.ShowMessageBox(msg, title, typ)
  local ans = table.remove(F.mb_answers, 1) or 1
  F.messages[#F.messages + 1] = { title = title, msg = msg, type = typ, answer = ans }
  return ans
end
R.MB = R.ShowMessageBox
function R.ShowConsoleMsg(s) F.console[#F.console + 1] = s end
function R.ExecProcess(cmd, timeout)
  if type(cmd) ~= "string" or math.type(timeout) ~= "integer" then error("ExecProcess(cmdline, timeoutmsec)") end
  F.exec[#F.exec + 1] = { cmd = cmd, timeout = timeout }
  if F.exec_fails then return nil end -- "returns NULL on total failure"
  return ""
end

-- undo, per project
local function undo_begin(p)
  p.open_undo = p.open_undo + 1
  p.undo[#p.undo + 1] = { begin = true }
end
local function undo_end(p, desc, flags)
  if p.open_undo < 1 then error("Undo_EndBlock without Undo_BeginBlock in project " .. p.index) end
  p.open_undo = p.open_undo - 1
  p.undo[#p.undo + 1] = { desc = desc, flags = flags }
  p.dirty = true -- an undo point marks the project as changed
end
function R.Undo_BeginBlock() undo_begin(F.active) end
function R.Undo_EndBlock(desc, flags) undo_end(F.active, desc, flags) end
function R.Undo_BeginBlock2(proj) undo_begin(P(proj)) end
function R.Undo_EndBlock2(proj, desc, flags) undo_end(P(proj), desc, flags) end
function R.MarkProjectDirty(proj) P(proj).dirty = true end
function R.IsProjectDirty(proj) return P(proj).dirty and 1 or 0 end

-- paths
function R.RecursiveCreateDirectory(path, _) os.execute('mkdir -p "' .. path .. '"') return 1 end
function R.file_exists(path) local f = io.open(path, "rb") if f then f:close() return true end return false end
function R.time_precise() return F.clock end
function R.GetProjectPath(_) return F.active.media or F.active.path end
function R.GetProjectPathEx(proj, _) local p = P(proj) return p.media or p.path end
function R.GetResourcePath() return F.resource_path end
function R.GetOS() return "Other" end
function R.APIExists(name) return R[name] ~= nil end
-- ReaPack (scenario "reapack": true): "ReaPack_BrowsePackages(filter)" opens its package browser at `filter`.
function R.ReaPack_BrowsePackages(filter) F.browsed = F.browsed or {} F.browsed[#F.browsed + 1] = filter end

-- Script instances: each run is an instance; defer/atexit belong to the instance that calls them.
function R.get_action_context()
  local inst = F.current
  return false, inst and inst.path or F.script_path, 0, inst and inst.cmd or 1, -1, -1, -1
end
function R.defer(fn)
  F.deferred[#F.deferred + 1] = { fn = fn, inst = F.current }
  if F.current then F.current.deferred = true end
  return true
end
function R.atexit(fn)
  if F.current then F.current.atexit[#F.current.atexit + 1] = fn end
  F.atexit[#F.atexit + 1] = fn
end
function R.set_action_options(flags)
  local inst = assert(F.current, "set_action_options outside a script")
  inst.options = flags
  if flags & 4 ~= 0 then F.toggle[inst.path] = 1 end
  if flags & 8 ~= 0 then F.toggle[inst.path] = 0 end
end
function R.AddRemoveReaScript(add, section, path, _)
  assert(add and section == 0, "only adding to the main section is modelled")
  for cmd, p in pairs(F.actions) do if p == path then return cmd end end
  F.next_cmd = F.next_cmd + 1
  F.actions[F.next_cmd] = path
  return F.next_cmd
end
-- Native actions the scripts run (see the header); anything else is an error.
local NATIVE = {}
function R.Main_OnCommand(cmd, _)
  if NATIVE[cmd] then
    F.commands[#F.commands + 1] = cmd
    return NATIVE[cmd]()
  end
  local path = F.actions[cmd]
  if not path then error("Main_OnCommand: unknown command " .. tostring(cmd)) end
  F.launch(path, cmd)
end

-- transport ("&1=playing, &2=pause, &=4 is recording")
function F.set_play_state(v)
  F.play.state = v
  if v & 1 == 1 then F.play.pos = F.edit_cursor end
end
function R.GetPlayState() return F.play.state end
function R.GetPlayStateEx(proj) P(proj) return F.play.state end
function R.GetPlayPosition() return F.play.state & 1 == 1 and F.play.pos or F.edit_cursor end
function R.GetPlayPosition2() return R.GetPlayPosition() end
function R.GetCursorPosition() return F.edit_cursor end
function R.GetCursorPositionEx(proj) P(proj) return F.edit_cursor end
function R.SetEditCurPos(t, moveview, _)
  F.edit_cursor = t
  if moveview then F.view_moved_to = t end
end
function R.SetEditCurPos2(proj, t, moveview, seekplay) P(proj) R.SetEditCurPos(t, moveview, seekplay) end
function R.OnPlayButton()
  if F.play.state & 4 == 4 then return end
  F.play.state, F.play.pos = 1, F.edit_cursor
  F.log[#F.log + 1] = { fn = "OnPlayButton", args = { F.edit_cursor } }
end
function R.OnStopButton() F.play.state = 0 F.log[#F.log + 1] = { fn = "OnStopButton", args = {} } end
function R.OnPlayButtonEx(proj) P(proj) R.OnPlayButton() end
function R.OnStopButtonEx(proj) P(proj) R.OnStopButton() end
NATIVE[40044] = function() -- Transport: Play/stop
  if F.play.state & 1 == 1 then R.OnStopButton() else R.OnPlayButton() end
end

-- selection
function R.SetMediaItemSelected(it, sel) it.selected = sel and true or false end
function R.IsMediaItemSelected(it) return it.selected end
function R.SelectAllMediaItems(proj, sel)
  for _, it in ipairs(items_of(proj)) do it.selected = sel and true or false end
end
function R.SetOnlyTrackSelected(tr) for _, t in ipairs(tr.project.tracks) do t.selected = (t == tr) end end
function R.SetTrackSelected(tr, sel) tr.selected = sel and true or false end
function R.SelectProjectInstance(proj) F.active = P(proj) end
NATIVE[40913] = function() end -- Track: Vertical scroll selected tracks into view
NATIVE[40129] = function() -- Take: Delete active take from items (selected items, active project)
  for _, it in ipairs(items_of(F.active)) do
    if it.selected and #it.takes > 0 then
      local tk = it.takes[it.active]
      if tk.original_guard then error("the original take was deleted") end
      table.remove(it.takes, it.active)
      tk.deleted = true
      if it.active > #it.takes then it.active = #it.takes end
    end
  end
end

-- deleting items and tracks
function R.DeleteTrackMediaItem(tr, it)
  for i, x in ipairs(tr.items) do
    if x == it then
      for _, tk in ipairs(it.takes) do if tk.original_guard then error("an original item was deleted") end end
      table.remove(tr.items, i)
      it.deleted = true
      return true
    end
  end
  return false
end
function R.DeleteTrack(tr)
  local list = tr.project.tracks
  for i, t in ipairs(list) do if t == tr then table.remove(list, i) tr.deleted = true return end end
end
function R.TrackList_AdjustWindows(_) count("TrackList_AdjustWindows") end

function R.PCM_Source_Destroy(src)
  if src.destroyed then error("PCM_Source_Destroy: source destroyed twice") end
  if src.used then error("PCM_Source_Destroy: the source is still used by a take") end
  src.destroyed = true
  F.sources.destroyed = F.sources.destroyed + 1
end

-- tempo map: the last marker at or before `time`
function R.TimeMap_GetTimeSigAtTime(proj, time)
  P(proj)
  local m = F.tempo_map[1]
  for _, x in ipairs(F.tempo_map) do if x.time <= time + 1e-9 then m = x end end
  return m.num, m.denom, m.bpm
end
function R.GetToggleCommandStateEx(_, cmd)
  local path = F.actions[cmd]
  return path and F.toggle[path] or -1
end
function R.RefreshToolbar2() end

---------------------------------------------------------------------------------------------
-- gfx: no-op drawing, recorded text, queued keys and mouse state set by the runner
---------------------------------------------------------------------------------------------

local G = { w = 760, h = 260, x = 0, y = 0, mouse_x = 0, mouse_y = 0, mouse_cap = 0, mouse_wheel = 0,
            texth = 14 }
function G.init(title, w, h)
  F.gfx_open = true F.gfx_title = title F.gfx_owner = F.current
  G.w, G.h = w or G.w, h or G.h
  return 1
end
function G.quit() F.gfx_open = false end
function G.getchar()
  if not F.gfx_open then return -1 end
  return table.remove(F.keys, 1) or 0
end
function G.set() end
function G.rect() end
function G.line() end
function G.update() end
function G.setfont(idx, face, size) F.font = { idx = idx, face = face, size = size } end
function G.measurestr(s) return #s * 7, 14 end
function G.drawstr(s) F.gfx_text[#F.gfx_text + 1] = s end

---------------------------------------------------------------------------------------------
-- Driving and dumping
---------------------------------------------------------------------------------------------

-- An instance is running while it has deferred work queued.
local function running(path)
  for _, d in ipairs(F.deferred) do
    if d.inst and d.inst.path == path and not d.inst.dead then return d.inst end
  end
end

local function terminate(inst)
  inst.dead = true
  local keep = {}
  for _, d in ipairs(F.deferred) do if d.inst ~= inst then keep[#keep + 1] = d end end
  F.deferred = keep
  local prev = F.current
  F.current = inst
  for _, fn in ipairs(inst.atexit) do fn() end
  F.current = prev
  if F.gfx_owner == inst then F.gfx_open = false end
  F.toggle[inst.path] = nil
end

local function in_instance(inst, fn, ...)
  local prev = F.current
  F.current = inst
  local ok, err = pcall(fn, ...)
  F.current = prev
  if not ok then error(err, 0) end
end

-- Runs a script as REAPER does when its action is triggered (menu, shortcut, Main_OnCommand).
function F.launch(path, cmd)
  local old = running(path)
  if old then
    local opts = old.options or 0
    if opts & 1 == 0 then
      -- "ReaScript task control": the user presses "Terminate instances"; the new run does not start
      F.task_control[#F.task_control + 1] = path
      terminate(old)
      return
    end
    terminate(old)
    if opts & 2 == 0 then return end -- auto-terminate: the relaunch just stops it (a toggle)
  end
  local inst = { path = path, cmd = cmd or 0, atexit = {} }
  F.instances[#F.instances + 1] = inst
  local undo_before = #F.active.undo
  in_instance(inst, dofile, path)
  -- "Undo points are created for ReaScripts by default. To prevent the automatic addition of an undo
  -- point, a script can call defer()": a run that neither deferred nor closed an undo block gets one.
  if not inst.deferred and #F.active.undo == undo_before then
    F.active.undo[#F.active.undo + 1] = { desc = "ReaScript: Run " .. (path:match("[^/]+$") or path) }
  end
end

-- Runs the callbacks deferred during the previous cycle, like REAPER does once per UI tick.
function F.run_defer_cycle()
  local fns = F.deferred
  F.deferred = {}
  F.clock = F.clock + F.dt
  if F.play.state & 1 == 1 then F.play.pos = F.play.pos + F.dt end
  F.gfx_text = {}
  if F.imgui_driver then F.imgui_driver.begin_cycle() end
  for _, d in ipairs(fns) do
    if not (d.inst and d.inst.dead) then in_instance(d.inst, d.fn) end
  end
  if F.imgui_driver then F.imgui_driver.end_cycle() end
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

local function dump_tracks(proj, lib)
  local tracks = lib.array()
  for _, tr in ipairs(proj.tracks) do
    local items = lib.array()
    for _, it in ipairs(tr.items) do
      local takes = lib.array()
      for _, tk in ipairs(it.takes) do takes[#takes + 1] = dump_take(tk, lib) end
      local active = it.takes[it.active]
      items[#items + 1] = { guid = it.guid, values = it.values, takes = takes,
                            active_take = active and active.guid or lib.null, selected = it.selected }
    end
    local plays = lib.array()
    for lane = 0, (tr.lanes or 1) - 1 do plays[#plays + 1] = (tr.laneplays or {})[lane] or 0 end
    local names = lib.array()
    for lane = 0, (tr.lanes or 1) - 1 do names[#names + 1] = tr.lane_names[lane] or "" end
    tracks[#tracks + 1] = { name = tr.name, items = items, new = tr.new or false, freemode = tr.freemode or 0,
                            lanes = tr.lanes or 1, laneplays = plays, mute = tr.mute or 0, solo = tr.solo or 0,
                            lane_names = names, selected = tr.selected or false }
  end
  return tracks
end

local function dump_undo(proj, lib)
  local undo = lib.array()
  for _, u in ipairs(proj.undo) do undo[#undo + 1] = u.begin and "begin" or ("end:" .. u.desc) end
  return undo
end

function F.dump(lib)
  local projects = lib.array()
  local open_undo = 0
  for _, proj in ipairs(F.projects) do
    local pe = lib.object()
    for k, v in pairs(proj.projext) do pe[k] = v end
    projects[#projects + 1] = { tracks = dump_tracks(proj, lib), undo = dump_undo(proj, lib),
                                open_undo = proj.open_undo, dirty = proj.dirty, projextstate = pe }
    open_undo = open_undo + proj.open_undo
  end
  local ext = lib.object()
  for k, e in pairs(F.extstate) do ext[k] = { value = e.value, persist = e.persist } end
  local msgs = lib.array()
  for _, m in ipairs(F.messages) do msgs[#msgs + 1] = m end
  local counts = lib.object()
  for k, v in pairs(F.counts) do counts[k] = v end
  local opens = lib.object()
  for k, v in pairs(F.opens) do opens[k] = v end
  local toggles = lib.object()
  for k, v in pairs(F.toggle) do toggles[k] = v end
  local actions = lib.object()
  for k, v in pairs(F.actions) do actions[tostring(k)] = v end
  return {
    tracks = projects[1].tracks, undo = projects[1].undo, projects = projects, open_undo = open_undo,
    refresh_depth = F.refresh_depth, extstate = ext, messages = msgs,
    console = lib.array(F.console), exec = lib.array(F.exec), gfx_open = F.gfx_open,
    gfx_text = lib.array(F.gfx_text), pending_defer = #F.deferred, accessors_open = F.accessors,
    inputs_asked = lib.array(F.inputs_asked), jobs_active = AIEDIT_JOBS_ACTIVE or lib.null,
    counts = counts, opens = opens, task_control = lib.array(F.task_control), toggles = toggles,
    actions = actions, font = F.font or lib.null,
    play = { state = F.play.state, pos = F.play.pos }, edit_cursor = F.edit_cursor,
    view_moved_to = F.view_moved_to or lib.null, commands = lib.array(F.commands),
    time_selection = lib.array({ F.projects[1].time_selection[1], F.projects[1].time_selection[2] }),
    sources = { made = F.sources.made, destroyed = F.sources.destroyed, used = F.sources.used,
                leaked = F.sources.made - F.sources.destroyed - F.sources.used },
    imgui = F.imgui_dump and F.imgui_dump(lib) or lib.null, browsed = lib.array(F.browsed or {}),
  }
end

-- API functions by the version that added them (see the header); the others exist in every modelled set.
local SINCE = { InsertTrackInProject = 7.18, set_action_options = 7.03 }
local ALL = {}
for k, v in pairs(R) do ALL[k] = v end
function F.apply_version(v)
  F.version_string = tostring(v)
  F.version = tonumber(F.version_string:match("^(%d+%.%d+)")) or error("bad reaper_version " .. F.version_string)
  for name, since in pairs(SINCE) do
    if ALL[name] then R[name] = (F.version >= since) and ALL[name] or nil end
  end
end

F.reaper, F.gfx = R, G
return F
