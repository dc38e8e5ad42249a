-- @noindex
--[[ Import of finished jobs: copy the take files into the project's media folder (the spool is not
the project's), then add one take per η to the item (or one muted track per η, or one silent fixed lane
per η), as one undo point in the item's own project. What each REAPER version can do decides the placement
(docs/reaper.md, "REAPER versions"). ]]
local M = require("aiedit.core")

local EPS = 1e-6

-- Item by GUID in the given project.
function M.find_item(proj, guid)
  if reaper.BR_GetMediaItemByGUID then
    local it = reaper.BR_GetMediaItemByGUID(proj, guid)
    if it then return it end
  end
  for i = 0, reaper.CountMediaItems(proj) - 1 do
    local it = reaper.GetMediaItem(proj, i)
    if M.item_guid(it) == guid then return it end
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

-- REAPER's version as a number (7.08 for "7.08/win64"); 0 when unknown.
function M.reaper_version()
  local v = reaper.GetAppVersion and reaper.GetAppVersion() or ""
  return tonumber(tostring(v):match("^(%d+%.%d+)")) or 0
end

-- Fixed item lanes came with REAPER 7.0 ("UpdateTimeline" exists since 6.24, so it proves nothing).
function M.has_fixed_lanes() return M.reaper_version() >= 7.0 end

-- Where a project keeps its media: GetProjectPathEx (the project's recording path) + aiedit/<job>. nil for a
-- project that was never saved: its "recording path" is REAPER's global default folder, not the project's.
function M.media_dir(proj, job_id)
  if (M.project_file(proj) or "") == "" then return nil end
  local base = reaper.GetProjectPathEx(proj, "")
  if not base or base == "" then return nil end
  return M.join(base, "aiedit", job_id)
end

-- Copies the take files next to the project (atomic per file). Returns the new paths or nil, error.
function M.copy_takes(proj, record, takes)
  local dir = M.media_dir(proj, record.id)
  if not dir then return nil, "the project was never saved" end
  M.mkdir_p(dir)
  local out = {}
  for i, t in ipairs(takes) do
    local name = tostring(t.path):match("([^/\\]+)$") or ("take" .. i .. ".wav")
    local dest, err = M.copy_file(t.path, M.join(dir, name))
    if not dest then return nil, err end
    out[i] = dest
  end
  return out
end

-- Playback settings copied from the original take when the new take holds source-time audio,
-- so switching takes sounds like switching audio, nothing else.
local COPY_FROM_ORIGINAL = { "D_PITCH", "B_PPITCH", "I_PITCHMODE", "D_VOL", "D_PAN", "I_CHANMODE" }

local function set_ext(take, key, value)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:" .. key, tostring(value), true)
end

-- Source offset that keeps the new take lined up with the original after a left-edge trim made while
-- the job ran. Source-time takes: the original's offset change, in source seconds. Rendered takes
-- (timeline audio at rate 1): the same change divided by the original's playrate.
function M.alignment_offset(original, record)
  if not original then return 0.0 end
  local now = reaper.GetMediaItemTakeInfo_Value(original, "D_STARTOFFS")
  local rate_now = reaper.GetMediaItemTakeInfo_Value(original, "D_PLAYRATE")
  local rate_then = record.orig_rate or record.rate
  if math.abs(rate_now - rate_then) > EPS then return 0.0 end
  local offs
  if record.how == "file" then offs = now - record.region_start
  else offs = (now - (record.orig_offs or now)) / rate_then end
  if math.abs(offs) < EPS then offs = 0.0 end
  return offs
end

-- The job's prompt: the status carries it whole (the record keeps a short copy).
local function job_prompt(record, status)
  local p = M.val(status.prompt)
  return type(p) == "string" and p ~= "" and p or record.prompt
end

local function tag_take(tk, record, status, t, index)
  local eta = tonumber(t.eta) or 0
  local prompt = job_prompt(record, status)
  reaper.GetSetMediaItemTakeInfo_String(tk, "P_NAME", M.take_label(eta, prompt), true)
  set_ext(tk, "aiedit_prompt", prompt)
  set_ext(tk, "aiedit_eta", string.format("%.4g", eta))
  set_ext(tk, "aiedit_seed", M.val(status.seed) or record.seed)
  set_ext(tk, "aiedit_mode", M.val(status.mode) or record.mode)
  set_ext(tk, "aiedit_model", M.val(status.model) or "")
  set_ext(tk, "aiedit_scores", M.json_encode(M.val(t.scores) or M.object()))
  set_ext(tk, "aiedit_job", record.id)
  set_ext(tk, "aiedit_best", (M.val(status.best) == index - 1) and "1" or "0")
  set_ext(tk, "aiedit_index", tostring(index - 1))
  if record.inpaint then set_ext(tk, "aiedit_inpaint", M.json_encode(record.inpaint)) end
end

-- What a result item must keep of the original item so it sounds the same apart from its audio: volume, fades
-- and their shapes and curves, snap offset, loop setting.
M.ITEM_PROPS = { "D_VOL", "D_FADEINLEN", "D_FADEOUTLEN", "D_FADEINLEN_AUTO", "D_FADEOUTLEN_AUTO", "C_FADEINSHAPE",
                 "C_FADEOUTSHAPE", "D_FADEINDIR", "D_FADEOUTDIR", "D_SNAPOFFSET", "B_LOOPSRC" }

local function copy_item_props(from, to)
  for _, k in ipairs(M.ITEM_PROPS) do
    reaper.SetMediaItemInfo_Value(to, k, reaper.GetMediaItemInfo_Value(from, k))
  end
end

-- Sources a take took over during this session's imports (the others are freed when an import fails).
local USED = setmetatable({}, { __mode = "k" })
function M.source_in_use(src) return USED[src] == true end

local function setup_take(tk, src, original, record, offs)
  reaper.SetMediaItemTake_Source(tk, src)
  USED[src] = true
  reaper.SetMediaItemTakeInfo_Value(tk, "D_PLAYRATE", record.rate)
  reaper.SetMediaItemTakeInfo_Value(tk, "D_STARTOFFS", offs)
  if original and record.how == "file" then
    for _, k in ipairs(COPY_FROM_ORIGINAL) do
      reaper.SetMediaItemTakeInfo_Value(tk, k, reaper.GetMediaItemTakeInfo_Value(original, k))
    end
  end
end

-- Results as takes of the item itself.
local function add_as_takes(item, original, record, status, takes, sources, offs)
  local was_active = reaper.GetActiveTake(item)
  local new = {}
  for i, t in ipairs(takes) do
    local tk = reaper.AddTakeToMediaItem(item)
    setup_take(tk, sources[i], original, record, offs)
    tag_take(tk, record, status, t, i)
    new[i] = tk
  end
  local best = M.val(status.best)
  local activate = M.is_yes(M.get_setting("activate_best")) and best and new[best + 1]
  reaper.SetActiveTake(activate or was_active) -- AddTakeToMediaItem may switch the active take
  reaper.UpdateItemInProject(item)
  return #new
end

-- One new item on `track` at the item's position and length (in fixed lane `lane` when given), with the
-- original item's volume, fades and loop setting.
local function add_item(track, item, original, record, status, t, src, offs, lane, index)
  local it = reaper.AddMediaItemToTrack(track)
  if lane then reaper.SetMediaItemInfo_Value(it, "I_FIXEDLANE", lane) end
  reaper.SetMediaItemPosition(it, reaper.GetMediaItemInfo_Value(item, "D_POSITION"), false)
  reaper.SetMediaItemLength(it, reaper.GetMediaItemInfo_Value(item, "D_LENGTH"), false)
  copy_item_props(item, it)
  local tk = reaper.AddTakeToMediaItem(it)
  setup_take(tk, src, original, record, offs)
  tag_take(tk, record, status, t, index)
  return it
end

-- Does anything on `track` (in fixed lane `lane`, when given) overlap [pos, pos + len)?
local function occupied(track, pos, len, lane)
  for i = 0, reaper.CountTrackMediaItems(track) - 1 do
    local it = reaper.GetTrackMediaItem(track, i)
    local p = reaper.GetMediaItemInfo_Value(it, "D_POSITION")
    local l = reaper.GetMediaItemInfo_Value(it, "D_LENGTH")
    if p < pos + len - EPS and p + l > pos + EPS
        and (not lane or math.floor(reaper.GetMediaItemInfo_Value(it, "I_FIXEDLANE") + 0.5) == lane) then
      return true
    end
  end
  return false
end

-- A new track at idx (0-based) in `proj`. InsertTrackInProject exists from REAPER 7.18; before, only
-- InsertTrackAtIndex, which inserts into the *active* project. nil when neither can reach `proj` now.
function M.insert_track(proj, idx)
  if reaper.InsertTrackInProject then
    reaper.InsertTrackInProject(proj, idx, 0)
  elseif reaper.EnumProjects(-1, "") == proj then
    reaper.InsertTrackAtIndex(idx, false)
  else
    return nil
  end
  return reaper.GetTrack(proj, idx)
end

-- Can results go on new tracks in `proj` now? False before REAPER 7.18 while another tab is active.
function M.can_insert_track(proj)
  return reaper.InsertTrackInProject ~= nil or reaper.EnumProjects(-1, "") == proj
end

local function track_name(tr)
  return select(2, reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", "", false)) or ""
end

function M.result_track_name(eta, base)
  return string.format("AI η=%.2f · %s", eta, base)
end

-- "AI η=0.50 · Drums" is the first slot of a strength; "AI η=0.50 · Drums (2)", ... the next ones: a second
-- result for the same item and strength goes to the first slot where nothing overlaps it, never on top.
local function slot_base(name)
  return (name:gsub(" %(%d+%)$", ""))
end

local function slot_name(want, n) return n == 1 and want or string.format("%s (%d)", want, n) end

-- Results on new tracks right below the item's track: one track per η (named "AI η=0.50 · Drums", reused by
-- later imports), each muted, so nothing plays on top of the original; the original item is untouched.
-- Unmuting one track (or soloing it) auditions that η. Returns the number of items added and of tracks made.
local function add_on_new_tracks(proj, item, original, record, status, takes, sources, offs)
  local track = reaper.GetMediaItemTrack(item)
  local idx = math.floor(reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER")) -- 1-based: the next one
  local base = track_name(track) ~= "" and track_name(track) or record.label
  local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
  local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
  -- the block of result tracks already right below (from earlier imports)
  local block, last, suffix = {}, idx - 1, " · " .. base
  while true do
    local tr = reaper.GetTrack(proj, last + 1)
    if not tr then break end
    local name = slot_base(track_name(tr))
    if not (name:sub(1, #"AI η=") == "AI η=" and name:sub(-#suffix) == suffix) then break end
    block[track_name(tr)] = tr
    last = last + 1
  end
  local made = 0
  for i, t in ipairs(takes) do
    local want = M.result_track_name(tonumber(t.eta) or 0, base)
    local tr, n
    n = 1
    while true do
      tr = block[slot_name(want, n)]
      if not tr or not occupied(tr, pos, len) then break end
      n = n + 1
    end
    if not tr then
      tr = M.insert_track(proj, last + 1)
      if not tr then error("REAPER before 7.18 adds tracks only to the active project tab") end
      last = last + 1
      made = made + 1
      reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", slot_name(want, n), true)
      reaper.SetMediaTrackInfo_Value(tr, "B_MUTE", 1)
      block[slot_name(want, n)] = tr
    end
    add_item(tr, item, original, record, status, t, sources[i], offs, nil, i)
  end
  if made > 0 and reaper.TrackList_AdjustWindows then reaper.TrackList_AdjustWindows(false) end
  return #takes, made
end

function M.lane_name(eta) return string.format("AI η=%.2f", eta) end

-- Results as items in fixed lanes of the item's own track (REAPER 7): one named lane per η ("AI η=0.50"),
-- shared by every item of the track and reused by later imports (a second result for the same item and strength
-- goes to "AI η=0.50 (2)"), at the original's position and length. The AI lanes do not play: the original keeps
-- sounding until the user picks a lane (comping).
local function add_in_lanes(item, original, record, status, takes, sources, offs)
  local track = reaper.GetMediaItemTrack(item)
  if reaper.GetMediaTrackInfo_Value(track, "I_FREEMODE") ~= 2 then
    reaper.SetMediaTrackInfo_Value(track, "I_FREEMODE", 2)
    reaper.UpdateTimeline()
  end
  local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
  local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
  local lanes = {}
  local count = math.floor(reaper.GetMediaTrackInfo_Value(track, "I_NUMFIXEDLANES") + 0.5)
  for lane = 0, count - 1 do
    local _, name = reaper.GetSetMediaTrackInfo_String(track, "P_LANENAME:" .. lane, "", false)
    if name and name ~= "" then lanes[name] = lane end
  end
  for i, t in ipairs(takes) do
    local want = M.lane_name(tonumber(t.eta) or 0)
    local lane, n
    n = 1
    while true do
      lane = lanes[slot_name(want, n)]
      if not lane or not occupied(track, pos, len, lane) then break end
      n = n + 1
    end
    if not lane then
      lane = count
      count = count + 1
      reaper.SetMediaTrackInfo_Value(track, "I_NUMFIXEDLANES", count)
      reaper.SetMediaTrackInfo_Value(track, "C_LANEPLAYS:" .. lane, 0)
      reaper.GetSetMediaTrackInfo_String(track, "P_LANENAME:" .. lane, slot_name(want, n), true)
      lanes[slot_name(want, n)] = lane
    end
    add_item(track, item, original, record, status, t, sources[i], offs, lane, i)
  end
  return #takes
end

-- Where results go for this item now: the setting, with REAPER 6 (no fixed lanes) and items that play all their
-- takes at once (new takes would all sound together) sent to muted tracks. Returns target, note.
function M.result_target(_, item)
  local target = M.get_setting("results")
  if target == "lanes" and not M.has_fixed_lanes() then return "track", " (REAPER 6 has no fixed lanes)" end
  if target == "takes" and item and reaper.GetMediaItemInfo_Value(item, "B_ALLTAKESPLAY") ~= 0 then
    return "track", " (the item plays all its takes at once: new takes would sound together)"
  end
  return target, ""
end

-- Why a finished job cannot be imported now (it waits, keeping its place), or nil. Checked before an import slot
-- is taken, so jobs that must wait never hold the slots of jobs that can go in.
function M.import_wait(proj, record, item)
  if (reaper.GetPlayStateEx and reaper.GetPlayStateEx(proj) or reaper.GetPlayState()) & 4 == 4 then
    return "waits while REAPER records"
  end
  if not M.media_dir(proj, record.id) then return "save the project (File > Save project) to import its takes" end
  local target = M.result_target(record, item)
  if target == "track" and not M.can_insert_track(proj) then
    return "switch to its project tab to import (REAPER before 7.18 adds tracks only there)"
  end
  return nil
end

-- Imports a "done" status into `proj`. Returns ok, message, kind. One undo point per import in the
-- item's project; on an error the block is still closed, the UI refresh balanced, and the caller marks
-- the job failed (so a poll never adds the takes a second time).
function M.import_result(proj, record, status)
  local takes = M.val(status.takes) or {}
  if #takes == 0 then return false, "the job finished without takes" end
  for _, t in ipairs(takes) do
    if not M.file_exists(t.path) then return false, "take file missing: " .. tostring(t.path) end
  end
  local item = M.find_item(proj, record.item)
  if not item then
    return false, "the item is gone; the takes are kept in " .. M.join(record.spool, "jobs", record.id,
      "takes"), "missing"
  end
  local target, note = M.result_target(record, item)
  -- checks that can wait come before anything is copied or changed
  local wait = M.import_wait(proj, record, item)
  if wait then return false, wait, "wait" end
  local paths, cerr = M.copy_takes(proj, record, takes)
  if not paths then return false, "could not copy the takes into the project folder: " .. tostring(cerr) end
  local sources = {}
  for i, p in ipairs(paths) do
    sources[i] = reaper.PCM_Source_CreateFromFile(p)
    if not sources[i] then -- the ones made so far belong to no take yet: free them
      for j = 1, i - 1 do reaper.PCM_Source_Destroy(sources[j]) end
      return false, "REAPER cannot read the take file " .. p
    end
  end
  local original = M.find_take(item, record.take)
  local offs = M.alignment_offset(original, record)
  reaper.PreventUIRefresh(1)
  reaper.Undo_BeginBlock2(proj)
  local made = 0
  local ok, n = pcall(function()
    if target == "track" then
      local count, tracks = add_on_new_tracks(proj, item, original, record, status, takes, sources, offs)
      made = tracks
      return count
    end
    if target == "lanes" then return add_in_lanes(item, original, record, status, takes, sources, offs) end
    return add_as_takes(item, original, record, status, takes, sources, offs)
  end)
  local label = record.label ~= "" and record.label or "item"
  if ok then
    reaper.Undo_EndBlock2(proj, string.format("AI edit: %d take%s for %s", n, n == 1 and "" or "s", label), -1)
  else
    reaper.Undo_EndBlock2(proj, "AI edit: failed import for " .. label, -1)
    -- sources no take took over (the import stopped halfway) are freed
    for _, src in ipairs(sources) do
      if not M.source_in_use(src) then reaper.PCM_Source_Destroy(src) end
    end
  end
  reaper.MarkProjectDirty(proj)
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  if not ok then return false, "import failed: " .. tostring(n) end
  -- for the window: where the takes went and how each scored (a few numbers: the record stays small)
  record.placed, record.best, record.scores = target, M.val(status.best), {}
  for i, t in ipairs(takes) do
    local sum = M.val(t.scores) and tonumber(M.val(M.val(t.scores).sum))
    record.scores[i] = sum and math.floor(sum * 1000 + 0.5) / 1000 or M.null
  end
  local where = ""
  if target == "track" then
    local _, tname = reaper.GetSetMediaTrackInfo_String(reaper.GetMediaItemTrack(item), "P_NAME", "", false)
    where = string.format(" on muted tracks below %s (%d new; unmute one to hear it)%s",
      tname ~= "" and ("'" .. tname .. "'") or "its track", made, note)
  elseif target == "lanes" then
    where = " in its AI lanes (not playing: click a lane's play button to hear it)"
  end
  return true, string.format("%d take%s added%s", n, n == 1 and "" or "s", where)
end

return M
