-- @noindex
--[[ Jobs: build a protocol job from an item, submit, cancel, and the per-project bookkeeping
(job id -> item, take, label, geometry) kept in the item's project (ProjExtState, saved with the .rpp),
so reopening a project resumes its jobs. ]]
local M = require("aiedit.core")

local id_counter = 0

-- REAPER 6 runs Lua 5.3, whose math.random starts from the same seed in every session (5.4 seeds it at start):
-- ids and "random" seeds would repeat after a restart. Seed once from the clock and a per-process address.
-- Seeded at the first use (not at load: a host may load the library before it sets up its own state).
local seeded = false
function M.random(a, b)
  if not seeded then
    seeded = true
    local addr = tonumber((tostring({}):match("0x(%x+)") or tostring({}):match("(%x+)$") or "0"), 16) or 0
    local frac = math.floor(((reaper.time_precise and reaper.time_precise() or 0) % 1) * 1e6)
    math.randomseed((os.time() ~ addr ~ frac) & 0x7fffffff)
  end
  return math.random(a, b)
end

-- An ext-state value is known to hold about 4 KB (community-documented): a job's project record stays far below
-- it. Free text in it is cut to a few hundred bytes (the full prompt travels in the job and comes back in the
-- status); the job of an item still to render waits in a file of its own.
M.RECORD_TEXT_MAX = 240
M.RECORD_MAX = 3000

-- `s` cut to at most `max` bytes on a UTF-8 character boundary, with "…" when cut.
function M.short_text(s, max)
  s = tostring(s or "")
  if #s <= max then return s end
  local cut = max - 3
  while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
  return s:sub(1, cut) .. "…"
end
-- Unique among the daemon's jobs: a duplicate id is refused by the daemon, and we would then read
-- the older job's status as ours. So never reuse an id that exists in the inbox or jobs folder.
function M.new_job_id(item_guid, spool)
  local g = (item_guid or ""):gsub("[^%x]", ""):sub(1, 8):lower()
  if g == "" then g = "item" end
  while true do
    id_counter = id_counter + 1
    local id = string.format("rpr-%s-%d-%d%06d", g, os.time(), id_counter, M.random(0, 999999))
    if not spool or not (M.file_exists(M.join(spool, "inbox", id .. ".json"))
        or M.file_exists(M.join(spool, "jobs", id, "status.json"))) then
      return id
    end
  end
end

-- params: prompt, etas, mode, seed, priority. Returns job table, bookkeeping record, or nil, err.
-- An item that must be rendered first gets state "rendering": the jobs window renders it in defer
-- slices and submits the job afterwards (record.job holds it until then).
function M.prepare_job(item, params, spool, ts, te)
  local info, why = M.inspect_item(item)
  if not info then return nil, why end
  local item_guid = M.item_guid(item)
  local id = M.new_job_id(item_guid, spool)
  local region, inpaint = M.region_for(info, ts, te)
  local path = info.path
  if info.how == "render" then
    M.mkdir_p(M.join(spool, "renders"))
    path = M.join(spool, "renders", id .. ".wav")
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
  for k, v in pairs(params.extra or {}) do job[k] = v end -- model, bpm, time_signature, lyrics, ...
  -- a copy of the job (without the token, a secret) waits in SPOOL/renders/, the clients' own folder: the job of an
  -- item still to render is sent from it, and "Retry" sends any job again from it
  local jf, jerr = M.write_atomic(M.join(spool, "renders"), id .. ".job.json", M.json_encode(job))
  if not jf then return nil, jerr end
  local token = M.get_setting("token")
  if token ~= "" then job.token = token end
  local record = {
    id = id, spool = spool, item = item_guid, take = M.take_guid(info.take),
    label = M.short_text(label, M.RECORD_TEXT_MAX), prompt = M.short_text(params.prompt, M.RECORD_TEXT_MAX),
    mode = params.mode, seed = params.seed, etas = params.etas, model = job.model,
    priority = job.priority, how = info.how, rendered = info.how == "render" and path or nil,
    -- new takes play at the original's rate when they hold source-time audio (see docs)
    rate = info.how == "file" and info.rate or 1.0,
    region_start = info.how == "file" and info.offs or 0.0,
    -- the original's geometry at submission: a later trim of a rendered item is undone by an offset
    orig_offs = info.offs, orig_rate = info.rate,
    inpaint = inpaint, state = "submitted", stage = "queued", progress = 0.0,
    submitted = os.time(), job_file = jf,
  }
  if info.how == "render" then
    -- the job is sent when its render is done, from its copy: outside the record (a long prompt or lyrics would
    -- outgrow an ext-state value)
    record.state, record.stage = "rendering", "rendering"
    -- the geometry the job was built for: the render (later, in the jobs window) re-checks it
    record.render = { sr = info.sr, channels = info.channels, length = info.len, offs = info.offs, rate = info.rate }
    if inpaint then -- in source seconds, which a trim or a move does not change
      record.render.inpaint_src = { info.offs + inpaint.start * info.rate, info.offs + inpaint["end"] * info.rate }
    end
  end
  return job, record
end

local EPS = 1e-6

-- Has the item's geometry (offset, playrate, length) changed since the job of a rendered item was built?
-- Records written before the geometry was kept say no.
function M.render_geometry_changed(item, take, record)
  local g = record.render
  if not g or not g.offs then return false end
  return math.abs(reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS") - g.offs) > EPS
    or math.abs(reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE") - g.rate) > EPS
    or math.abs(reaper.GetMediaItemInfo_Value(item, "D_LENGTH") - g.length) > EPS
end

-- Rebuilds a waiting job for the item as it is now (render length, inpaint range, the geometry the import
-- aligns to), so the render, the job and the bookkeeping are taken at the same moment. Returns true, or nil and
-- why the job cannot go on (the range to regenerate was trimmed away).
-- The pending job of an item still to render: from its file (older records held it inline), or nil, why.
function M.pending_job(record)
  if record.job then return record.job end
  if not record.job_file then return nil, "the job to send after the render is missing" end
  local job, err = M.read_json_file(record.job_file)
  if type(job) ~= "table" then return nil, "cannot read " .. record.job_file .. ": " .. tostring(err) end
  return job
end

function M.reanchor_render(item, take, record, job)
  local g = record.render
  local offs = reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS")
  local rate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE")
  local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
  if rate <= 0 then rate = 1 end
  if len <= EPS then return nil, "the item has zero length now" end
  local inpaint = nil
  if g.inpaint_src then
    local s = math.max(0.0, (g.inpaint_src[1] - offs) / rate)
    local e = math.min(len, (g.inpaint_src[2] - offs) / rate)
    if e - s <= EPS then
      return nil, "the part to regenerate was trimmed off the item while its render waited"
    end
    if not (s <= EPS and e >= len - EPS) then inpaint = { start = s + 0.0, ["end"] = e + 0.0 } end
  end
  g.offs, g.rate, g.length = offs, rate, len
  record.orig_offs, record.orig_rate, record.inpaint = offs, rate, inpaint
  job.source.length = len + 0.0
  job.inpaint = inpaint or M.null
  return true
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
-- Bookkeeping in the project (ProjExtState section "aiedit.jobs", one key per job). Writers bump a
-- non-persistent ExtState counter so an open jobs window notices new jobs without rescanning.
---------------------------------------------------------------------------------------------

M.ACTIVE = { rendering = true, submitted = true, queued = true, running = true, cancelling = true }

-- A record as saved: optional text is cut further when it would outgrow M.RECORD_MAX.
function M.record_text(record)
  local text = M.json_encode(record)
  if #text > M.RECORD_MAX and record.message then
    record.message = M.short_text(record.message, 200)
    text = M.json_encode(record)
  end
  return text
end

function M.registry_write(proj, record)
  local text = M.record_text(record)
  reaper.SetProjExtState(proj, M.JOBS_SECTION, record.id, text)
  return text
end

function M.registry_remove(proj, id)
  reaper.SetProjExtState(proj, M.JOBS_SECTION, id, "")
end

function M.registry_bump()
  local n = tonumber(reaper.GetExtState(M.SECTION, "jobs_rev")) or 0
  reaper.SetExtState(M.SECTION, "jobs_rev", tostring(n + 1), false)
end

-- Records of one project not in `known` (lower-cased id -> anything): {id, key, record, text} each. Known ids
-- are not decoded again. The key is compared without case: public probes saw EnumProjExtState return keys
-- upper-cased, which is not settled for every REAPER version (docs/reaper.md), so both work; `key` is the key as
-- REAPER enumerated it, and later writes use exactly that key.
function M.registry_scan(proj, known)
  local out, i = {}, 0
  while true do
    local ok, key, text = reaper.EnumProjExtState(proj, M.JOBS_SECTION, i)
    if not ok then break end
    local lkey = tostring(key):lower()
    if not (known and known[lkey]) then
      local r = M.json_decode(text)
      if type(r) == "table" and type(r.id) == "string" and r.id:lower() == lkey then
        -- the key that reads the record back: as enumerated, else the id it was written under (a REAPER that
        -- enumerates keys upper-cased but matches them exactly)
        local _, cur = reaper.GetProjExtState(proj, M.JOBS_SECTION, key)
        if (cur == nil or cur == "") and key ~= r.id then
          local _, by_id = reaper.GetProjExtState(proj, M.JOBS_SECTION, r.id)
          if by_id ~= nil and by_id ~= "" then key = r.id end
        end
        out[#out + 1] = { id = r.id, key = key, record = r, text = text }
      end
    end
    i = i + 1
  end
  return out
end

-- Open projects (tabs): {proj = ReaProject*, file = project file name ("" while never saved)} each.
function M.projects()
  local out, i = {}, 0
  while true do
    local proj, file = reaper.EnumProjects(i, "")
    if not proj then return out end
    out[#out + 1] = { proj = proj, file = file or "" }
    i = i + 1
  end
end

-- The project file of an open project, "" when it was never saved, nil when it is not open.
function M.project_file(proj)
  for _, p in ipairs(M.projects()) do if p.proj == proj then return p.file end end
  return nil
end

return M
