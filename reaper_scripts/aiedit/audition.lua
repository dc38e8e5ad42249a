-- @noindex
--[[ Audition, compare, keep: play one AI take alone over its item's range and put everything back afterwards
(the item's active take, track solos, item selection, edit cursor, and playback if it was playing), switch
between the original and the take while it plays (A/B), and keep one take: it becomes active and the job's other
AI takes go, as one undo point. Results as takes, on tracks and in lanes alike. ]]
local M = require("aiedit.core")

local TAKE_VALUES = { "D_STARTOFFS", "D_PLAYRATE", "D_PITCH", "B_PPITCH", "I_PITCHMODE", "D_VOL", "D_PAN",
                      "I_CHANMODE" }
local TAKE_EXT = { "aiedit_prompt", "aiedit_eta", "aiedit_seed", "aiedit_mode", "aiedit_model", "aiedit_scores",
                   "aiedit_job", "aiedit_best", "aiedit_index", "aiedit_inpaint" }

local function ext(take, key)
  local _, v = reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:" .. key, "", false)
  return v or ""
end

local function track_name(tr)
  return select(2, reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", "", false)) or ""
end

-- The job's AI results, in take order: {kind = "take" | "track" | "lane", item, take, index (0-based), eta}.
-- Takes of the item itself; else result items on the tracks right below it ("AI η=…") or in its track's lanes.
function M.job_results(e)
  local r = e.record
  local item = M.row_item(e)
  local out = {}
  if not item then return out end
  for i = 0, reaper.CountTakes(item) - 1 do
    local tk = reaper.GetTake(item, i)
    if tk and ext(tk, "aiedit_job") == r.id then out[#out + 1] = { kind = "take", item = item, take = tk } end
  end
  if #out == 0 then
    local track = reaper.GetMediaItemTrack(item)
    local proj = e.proj
    local idx = math.floor(reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER")) - 1
    local tracks = { track }
    while true do -- the block of result tracks right below
      local tr = reaper.GetTrack(proj, idx + #tracks)
      if not tr or track_name(tr):sub(1, #"AI η=") ~= "AI η=" then break end
      tracks[#tracks + 1] = tr
    end
    for ti, tr in ipairs(tracks) do
      for i = 0, reaper.CountTrackMediaItems(tr) - 1 do
        local it = reaper.GetTrackMediaItem(tr, i)
        local tk = reaper.GetActiveTake(it)
        if tk and it ~= item and ext(tk, "aiedit_job") == r.id then
          out[#out + 1] = { kind = ti == 1 and "lane" or "track", item = it, take = tk, track = tr }
        end
      end
    end
  end
  for n, x in ipairs(out) do
    x.index = tonumber(ext(x.take, "aiedit_index")) or (n - 1)
    x.eta = tonumber(ext(x.take, "aiedit_eta"))
    x.best = ext(x.take, "aiedit_best") == "1"
    x.scores = M.json_decode(ext(x.take, "aiedit_scores"))
  end
  table.sort(out, function(a, b) return a.index < b.index end)
  return out
end

-- The results of a row, cached while their pointers stay valid.
function M.row_results(e)
  local ok = e.results ~= nil
  for _, x in ipairs(e.results or {}) do
    ok = ok and reaper.ValidatePtr2(e.proj, x.item, "MediaItem*") and reaper.ValidatePtr2(e.proj, x.take,
      "MediaItem_Take*")
  end
  if not ok then e.results = M.job_results(e) end
  return e.results
end

-- Actions on the transport and on selections reach the active project only: bring the row's tab forward.
local function activate(ui, e)
  if reaper.EnumProjects(-1, "") == e.proj then return true end
  if reaper.SelectProjectInstance then reaper.SelectProjectInstance(e.proj) return true end
  M.log(ui, "switch to the project tab of " .. e.record.label .. " first")
  return false
end

local function lane_of(item) return math.floor(reaper.GetMediaItemInfo_Value(item, "I_FIXEDLANE") + 0.5) end

-- Sets who sounds for `showing` ("take" or "original"): the item's active take, which track is soloed, or which
-- lane plays.
local function show(a, showing)
  a.showing = showing
  local res, take = a.res, showing == "take"
  if res.kind == "take" then
    local tk = take and res.take or a.original
    if tk and reaper.ValidatePtr2(a.proj, tk, "MediaItem_Take*") then reaper.SetActiveTake(tk) end
  elseif res.kind == "track" then
    reaper.SetMediaTrackInfo_Value(res.track, "I_SOLO", take and 2 or 0)
    reaper.SetMediaTrackInfo_Value(a.item_track, "I_SOLO", take and 0 or 2)
  else
    reaper.SetMediaTrackInfo_Value(a.item_track, "C_LANEPLAYS:" .. lane_of(res.item), take and 1 or 0)
    reaper.SetMediaTrackInfo_Value(a.item_track, "C_LANEPLAYS:" .. lane_of(a.item), take and 0 or 1)
  end
  reaper.UpdateArrange()
end

-- Plays result k (1-based) of the row alone over its item's range.
function M.audition_start(ui, e, k)
  if ui.audition then M.audition_stop(ui) end
  local res = M.row_results(e)[k]
  local item = M.row_item(e)
  if not (res and item) or not activate(ui, e) then return false end
  local proj = e.proj
  if reaper.GetPlayStateEx(proj) & 4 == 4 then M.log(ui, "REAPER is recording: no audition now") return false end
  local a = { e = e, k = k, res = res, proj = proj, item = item, item_track = reaper.GetMediaItemTrack(item),
              play_state = reaper.GetPlayStateEx(proj), play_pos = reaper.GetPlayPosition(),
              cursor = reaper.GetCursorPositionEx(proj), solo = {}, sel = {}, lanes = {} }
  a.original = M.find_take(item, e.record.take) or reaper.GetActiveTake(item)
  a.active = reaper.GetActiveTake(item)
  for i = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, i)
    a.solo[#a.solo + 1] = { tr, reaper.GetMediaTrackInfo_Value(tr, "I_SOLO") }
  end
  for i = 0, reaper.CountSelectedMediaItems(proj) - 1 do a.sel[#a.sel + 1] = reaper.GetSelectedMediaItem(proj, i) end
  if res.kind == "track" then
    a.mute = reaper.GetMediaTrackInfo_Value(res.track, "B_MUTE")
  elseif res.kind == "lane" then
    for lane = 0, math.floor(reaper.GetMediaTrackInfo_Value(a.item_track, "I_NUMFIXEDLANES") + 0.5) - 1 do
      a.lanes[lane] = reaper.GetMediaTrackInfo_Value(a.item_track, "C_LANEPLAYS:" .. lane)
    end
  end
  if a.play_state & 1 == 1 then reaper.OnStopButtonEx(proj) end
  -- only this take's track sounds
  for _, s in ipairs(a.solo) do reaper.SetMediaTrackInfo_Value(s[1], "I_SOLO", 0) end
  if res.kind == "track" then
    reaper.SetMediaTrackInfo_Value(res.track, "B_MUTE", 0)
  else
    reaper.SetMediaTrackInfo_Value(a.item_track, "I_SOLO", 2) -- soloed in place: its routing stays
  end
  show(a, "take")
  a.t0 = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
  a.t1 = a.t0 + reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
  reaper.SetEditCurPos2(proj, a.t0, false, false)
  reaper.OnPlayButtonEx(proj)
  ui.audition = a
  return true
end

-- A/B: the original or the take, while it plays.
function M.audition_ab(ui)
  local a = ui.audition
  if not a then return false end
  show(a, a.showing == "take" and "original" or "take")
  return true
end

-- Ends the audition at the item's end, when playback stopped, or when the project went away.
function M.audition_tick(ui)
  local a = ui.audition
  if not reaper.ValidatePtr2(0, a.proj, "ReaProject*") then ui.audition = nil return end
  if reaper.GetPlayStateEx(a.proj) & 1 == 0 or reaper.GetPlayPosition() >= a.t1 - 0.005 then M.audition_stop(ui) end
end

-- Stops the audition and puts back what it changed.
function M.audition_stop(ui)
  local a = ui.audition
  if not a then return end
  ui.audition = nil
  local proj = a.proj
  if not reaper.ValidatePtr2(0, proj, "ReaProject*") then return end
  if reaper.GetPlayStateEx(proj) & 1 == 1 then reaper.OnStopButtonEx(proj) end
  local res = a.res
  if res.kind == "take" then
    if a.active and reaper.ValidatePtr2(proj, a.active, "MediaItem_Take*") then reaper.SetActiveTake(a.active) end
  elseif res.kind == "track" then
    if reaper.ValidatePtr2(proj, res.track, "MediaTrack*") then
      reaper.SetMediaTrackInfo_Value(res.track, "B_MUTE", a.mute)
    end
  else
    for lane, v in pairs(a.lanes) do reaper.SetMediaTrackInfo_Value(a.item_track, "C_LANEPLAYS:" .. lane, v) end
  end
  for _, s in ipairs(a.solo) do
    if reaper.ValidatePtr2(proj, s[1], "MediaTrack*") then reaper.SetMediaTrackInfo_Value(s[1], "I_SOLO", s[2]) end
  end
  reaper.SelectAllMediaItems(proj, false)
  for _, it in ipairs(a.sel) do
    if reaper.ValidatePtr2(proj, it, "MediaItem*") then reaper.SetMediaItemSelected(it, true) end
  end
  if a.play_state & 1 == 1 then -- it was playing: play on from where it was
    reaper.SetEditCurPos2(proj, a.play_pos, false, false)
    reaper.OnPlayButtonEx(proj)
  end
  reaper.SetEditCurPos2(proj, a.cursor, false, false)
  reaper.UpdateArrange()
end

-- Keeps result k: it becomes the item's active take and the job's other AI takes go (one undo point). Results on
-- tracks or in lanes: the kept one becomes a new active take of the item, and the job's result items go (an AI
-- track left empty goes too).
function M.keep(ui, e, k)
  if ui.audition then M.audition_stop(ui) end
  local results = M.row_results(e)
  local res = results[k]
  local item = M.row_item(e)
  if not (res and item) or not activate(ui, e) then return false end
  local proj, r = e.proj, e.record
  reaper.PreventUIRefresh(1)
  reaper.Undo_BeginBlock2(proj)
  local ok, err = pcall(function()
    if res.kind == "take" then
      -- "Take: Delete active take from items" works on the selected items: this item alone, then as it was
      local sel = {}
      for i = 0, reaper.CountSelectedMediaItems(proj) - 1 do sel[#sel + 1] = reaper.GetSelectedMediaItem(proj, i) end
      reaper.SelectAllMediaItems(proj, false)
      reaper.SetMediaItemSelected(item, true)
      for _, x in ipairs(results) do
        if x ~= res then
          reaper.SetActiveTake(x.take)
          reaper.Main_OnCommand(40129, 0) -- Take: Delete active take from items
        end
      end
      reaper.SetActiveTake(res.take)
      reaper.SelectAllMediaItems(proj, false)
      for _, it in ipairs(sel) do if reaper.ValidatePtr2(proj, it, "MediaItem*") then
        reaper.SetMediaItemSelected(it, true) end end
    else
      local path = reaper.GetMediaSourceFileName(reaper.GetMediaItemTake_Source(res.take), "")
      local src = reaper.PCM_Source_CreateFromFile(path)
      if not src then error("REAPER cannot read " .. tostring(path)) end
      local tk = reaper.AddTakeToMediaItem(item)
      reaper.SetMediaItemTake_Source(tk, src)
      for _, key in ipairs(TAKE_VALUES) do
        reaper.SetMediaItemTakeInfo_Value(tk, key, reaper.GetMediaItemTakeInfo_Value(res.take, key))
      end
      reaper.GetSetMediaItemTakeInfo_String(tk, "P_NAME", M.take_name(res.take), true)
      for _, key in ipairs(TAKE_EXT) do
        local v = ext(res.take, key)
        if v ~= "" then reaper.GetSetMediaItemTakeInfo_String(tk, "P_EXT:" .. key, v, true) end
      end
      reaper.SetActiveTake(tk)
      local removed_track = false
      for _, x in ipairs(results) do
        local tr = reaper.GetMediaItemTrack(x.item)
        reaper.DeleteTrackMediaItem(tr, x.item)
        if x.kind == "track" and reaper.CountTrackMediaItems(tr) == 0 then
          reaper.DeleteTrack(tr)
          removed_track = true
        end
      end
      if removed_track and reaper.TrackList_AdjustWindows then reaper.TrackList_AdjustWindows(false) end
    end
    reaper.UpdateItemInProject(item)
  end)
  local what = string.format("η=%.2f", res.eta or 0)
  reaper.Undo_EndBlock2(proj, (ok and "AI edit: keep " or "AI edit: failed keep ") .. what .. " for " ..
    (r.label ~= "" and r.label or "item"), -1)
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  e.results = nil
  if not ok then M.log(ui, r.label .. ": could not keep the take: " .. tostring(err)) return false end
  r.kept = res.index
  M.save_row(ui, e)
  M.log(ui, r.label .. ": kept " .. what)
  return true
end

return M
