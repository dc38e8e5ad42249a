-- @noindex
--[[ What an item plays: source region, playrate, why it must be rendered or cannot be sent at all. ]]
local M = require("aiedit.core")
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

-- Take envelopes change what is heard, but neither the source file nor the take accessor (pre-FX,
-- pre-envelope) carries them. Refused: sending them would edit audio that is not what the user hears.
local TAKE_ENVELOPES = { "Volume", "Pan", "Mute", "Pitch" }

function M.take_envelopes(take)
  local found = {}
  if not reaper.GetTakeEnvelopeByName then return found end
  for _, name in ipairs(TAKE_ENVELOPES) do
    local env = reaper.GetTakeEnvelopeByName(take, name)
    if env and reaper.CountEnvelopePoints(env) > 0 then found[#found + 1] = name:lower() end
  end
  return found
end

-- A relative media path is relative to the folder of the item's own project file (not the active tab's, and
-- not the recording path); an unsaved project has no folder, so its recording path is the best guess.
local function source_path(src, item)
  local p = reaper.GetMediaSourceFileName(src, "")
  if p and p ~= "" and not M.is_abs(p) then
    local proj = reaper.GetItemProjectContext(item)
    local file = M.project_file(proj) or ""
    local base = file:match("^(.*)[/\\][^/\\]*$")
    if not base or base == "" then base = reaper.GetProjectPathEx(proj, "") end
    p = M.join(base, p)
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
  local envs = M.take_envelopes(take)
  if #envs > 0 then
    return nil, "take has a " .. table.concat(envs, "/") .. " envelope: render it into the audio first " ..
      "(Item: Apply track/take FX to items as new take) or remove the envelope"
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
    path = source_path(src, item),
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

-- The razor-edit areas of a track as {start, end, guid, top, bottom} (top/bottom nil when the area spans the
-- whole track). REAPER 7: "P_RAZOREDITS_EXT : list of razor edit areas, as comma-separated sets of
-- space-separated tuples of start time, end time, optional: envelope GUID string, fixed/fipm top y-position,
-- fixed/fipm bottom y-position" -- the lane extent exists only there. REAPER 6: "P_RAZOREDITS", triples.
local function track_razor_areas(tr)
  local out = {}
  local ok, ext = reaper.GetSetMediaTrackInfo_String(tr, "P_RAZOREDITS_EXT", "", false)
  if ok and ext and ext ~= "" then
    for tuple in ext:gmatch("[^,]+") do
      local a, b, rest = tuple:match("^%s*(%S+)%s+(%S+)%s*(.-)%s*$")
      local g, top, bottom = "", nil, nil
      if rest and rest ~= "" then
        local q, tail = rest:match('^"([^"]*)"%s*(.-)$')
        if q then g, rest = q, tail end
        local t, bo = rest:match("^(%S+)%s+(%S+)")
        top, bottom = tonumber(t), tonumber(bo)
      end
      out[#out + 1] = { tonumber(a), tonumber(b), g, top, bottom }
    end
    return out
  end
  local _, s = reaper.GetSetMediaTrackInfo_String(tr, "P_RAZOREDITS", "", false)
  for a, b, g in (s or ""):gmatch('(%S+)%s+(%S+)%s+"([^"]*)"') do out[#out + 1] = { tonumber(a), tonumber(b), g } end
  return out
end

-- Does an area with a y-extent (fixed lanes, free positioning) cover the item's lane? The item's own extent
-- comes from "F_FREEMODE_Y : free item positioning or fixed lane Y-position. 0=top of track, 1.0=bottom of
-- track" and F_FREEMODE_H; without one (no lanes) every area covers it.
local function covers_lane(item, top, bottom)
  if not top or not bottom then return true end
  local y = reaper.GetMediaItemInfo_Value(item, "F_FREEMODE_Y")
  local h = reaper.GetMediaItemInfo_Value(item, "F_FREEMODE_H")
  if not h or h <= 0 then return true end
  return math.min(bottom, y + h) - math.max(top, y) > 1e-4
end

-- Razor-edit areas on media lanes, per item they touch: {item = {{start, end}, ...}} (one entry per area, so
-- two areas on one item make two jobs); nil when there are none. Envelope areas (GUID not "") are ignored.
function M.razor_areas(proj)
  local areas, any = {}, false
  for t = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, t)
    for _, a in ipairs(track_razor_areas(tr)) do
      local rs, re, g = a[1], a[2], a[3]
      if g == "" and rs and re and re > rs then
        for i = 0, reaper.CountTrackMediaItems(tr) - 1 do
          local it = reaper.GetTrackMediaItem(tr, i)
          local pos = reaper.GetMediaItemInfo_Value(it, "D_POSITION")
          local len = reaper.GetMediaItemInfo_Value(it, "D_LENGTH")
          if rs < pos + len and re > pos and covers_lane(it, a[4], a[5]) then
            areas[it] = areas[it] or {}
            areas[it][#areas[it] + 1] = { rs, re }
            any = true
          end
        end
      end
    end
  end
  return any and areas or nil
end

return M
