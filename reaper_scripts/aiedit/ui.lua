-- @noindex
--[[ The jobs window: its own toggle action, a gfx defer loop that never blocks. It keeps every job
record in memory, reads status.json of active jobs a few times a second, renders items that need it in
slices, writes a record back only when it changed, and shows its messages itself (no console pop-up
per line). A project is known by its ReaProject* *and* its file: File > Open in the same tab keeps the
pointer, and a closed tab's pointer must never be used again. ]]
local M = require("aiedit.core")

local W = { poll_every = 0.5, engine_every = 2.0, per_poll = 50, imports_per_poll = 2,
            engine_start_grace = 20, status_grace = 30, row_h = 24, pad = 8, header = 34, footer = 70 }
M.STATUS_GRACE = W.status_grace

-- The script folder (for the jobs action's path).
function M.script_dir()
  local path = select(2, reaper.get_action_context())
  return path:match("^(.*[/\\])") or ""
end

-- The "AI edit jobs" action's command id (registered on first use; registering again returns the same id).
function M.jobs_command()
  local cmd = reaper.AddRemoveReaScript(true, 0, M.script_dir() .. "AI edit jobs.lua", true)
  if not cmd or cmd == 0 then return nil end
  return cmd
end

-- Is the jobs window open? Its action's toggle state says so (the window sets it with set_action_options,
-- REAPER 7.03+). Older versions have no toggle from a script: there the heartbeat decides, and it counts while
-- it exists (the window deletes it when it closes; it is not persisted) unless it is minutes old, because every
-- modal dialog, e.g. the prompt dialog the user is typing in, stops the window's defer loop meanwhile.
M.HEARTBEAT_STALE = 300

function M.window_alive(cmd)
  if reaper.set_action_options and cmd and reaper.GetToggleCommandStateEx then
    return reaper.GetToggleCommandStateEx(0, cmd) == 1
  end
  local t = tonumber(reaper.GetExtState(M.SECTION, "window_heartbeat"))
  return t ~= nil and math.abs(reaper.time_precise() - t) < M.HEARTBEAT_STALE
end

-- Opens "AI edit jobs" as its own action, so relaunching an edit action never touches the window's defer
-- loop. Does nothing when the window already runs (launching it again would close it: it is a toggle).
function M.open_jobs_window()
  local cmd = M.jobs_command()
  if not cmd or M.window_alive(cmd) then return false end
  reaper.Main_OnCommand(cmd, 0)
  return true
end

function M.state_text(r)
  if r.state == "imported" then return "done: " .. (r.message or "")
  elseif r.state == "failed" then return "failed: " .. (r.message or "")
  elseif r.state == "missing" then return "item gone: " .. (r.message or "")
  elseif r.state == "cancelled" then return "cancelled" .. (r.message and (": " .. r.message) or "")
  elseif r.state == "cancelling" then return "cancelling…"
  elseif r.state == "rendering" then return "rendering the item…"
  elseif r.state == "submitted" then return "waiting for the engine"
  elseif r.waiting then return "done: " .. r.waiting
  end
  return r.state
end

---------------------------------------------------------------------------------------------
-- Job updates
---------------------------------------------------------------------------------------------

function M.log(ui, msg)
  ui.messages[#ui.messages + 1] = msg
  if #ui.messages > 50 then table.remove(ui.messages, 1) end
end

-- A row may touch its project only while that tab is open and still holds the same project: a closed tab's
-- ReaProject* is invalid (ValidatePtr2), and File > Open in the same tab keeps the pointer but changes the file.
function M.row_alive(ui, e)
  return reaper.ValidatePtr2(0, e.proj, "ReaProject*") and ui.open[e.ident] == true
end

-- The project still holds this job's record (under the key REAPER enumerated): false when the tab now holds
-- another project that was never saved (same pointer, same empty file name).
local function still_ours(e)
  local _, cur = reaper.GetProjExtState(e.proj, M.JOBS_SECTION, e.key)
  return cur ~= nil and cur ~= ""
end

function M.save_row(ui, e)
  local text = M.record_text(e.record)
  if text ~= e.text and M.row_alive(ui, e) and still_ours(e) then
    reaper.SetProjExtState(e.proj, M.JOBS_SECTION, e.key, text)
    e.text = text
  end
end

local function finish(e, state, message)
  local r = e.record
  r.state, r.message, r.finished = state, message, os.time()
  if r.rendered then os.remove(r.rendered) r.rendered = nil end
  -- the job's copy stays while "Retry" may send it again (failed, cancelled); cleared rows and imports remove it
  if r.job_file and (state == "imported" or state == "missing") then os.remove(r.job_file) r.job_file = nil end
  r.job, r.waiting, e.job, e.no_status_since = nil, nil, nil, nil
end
M.finish_row = finish

-- The row's item: the pointer found last time while it is still valid and still that item (a GUID compare),
-- else a search (which scans the project: once, not on every tick).
function M.row_item(e)
  local it = e.item_ptr
  if it and reaper.ValidatePtr2(e.proj, it, "MediaItem*") and M.item_guid(it) == e.record.item then return it end
  it = M.find_item(e.proj, e.record.item)
  e.item_ptr = it
  return it
end

-- One rendering slice for a job whose item must be rendered; submits the job when done. The item is read
-- again before every slice: a trim while the job waited re-anchors the job to the item as it is now, and a
-- change during the render starts it over (the render, the job and the bookkeeping always agree).
local function render_tick(ui, e)
  local r = e.record
  local item = M.row_item(e)
  local take = item and (e.take_ptr and reaper.ValidatePtr2(e.proj, e.take_ptr, "MediaItem_Take*")
    and M.take_guid(e.take_ptr) == r.take and e.take_ptr or M.find_take(item, r.take))
  e.take_ptr = take
  if not take then
    if e.render then M.render_abort(e.render) e.render, ui.renders[e] = nil, nil end
    finish(e, "failed", "the item was deleted before it was rendered")
    return
  end
  if not e.job then
    local job, jerr = M.pending_job(r)
    if not job then finish(e, "failed", jerr) return end
    e.job = job
  end
  local changed = M.render_geometry_changed(item, take, r)
  if changed and e.render then
    M.render_abort(e.render)
    e.render, ui.renders[e] = nil, nil
  end
  if changed then
    local ok, why = M.reanchor_render(item, take, r, e.job)
    if not ok then finish(e, "failed", why) return end
    if r.job then r.job = e.job
    elseif r.job_file then -- the job waiting on disk follows the item too (a restart resumes this one)
      local dir, name = r.job_file:match("^(.*)[/\\]([^/\\]+)$")
      M.write_atomic(dir, name, M.json_encode(e.job))
    end
  end
  if not e.render then
    local rd, err = M.render_begin(take, r.render.sr, r.render.channels, r.render.length, e.job.source.path)
    if not rd then finish(e, "failed", "could not render the item: " .. tostring(err)) return end
    e.render = rd
    ui.renders[e] = true
  end
  local done, err = M.render_step(e.render, M.RENDER_SECONDS_PER_TICK)
  r.progress = M.render_progress(e.render) * 0.05
  if done == nil then
    e.render, ui.renders[e] = nil, nil
    finish(e, "failed", "could not render the item: " .. tostring(err))
  elseif done then
    e.render, ui.renders[e] = nil, nil
    local token = M.get_setting("token")
    if token ~= "" then e.job.token = token end
    local ok, werr = M.submit(r.spool, e.job)
    if ok then
      r.job, e.job, r.state, r.stage = nil, nil, "submitted", "queued"
      r.sent = os.time()
    else finish(e, "failed", "could not queue the job: " .. tostring(werr)) end
  end
end

-- Reads the job's status.json and acts on it. Completion racing with cancel: when the user
-- cancelled, a job that still finished is not imported (its files stay in the spool). At most
-- W.imports_per_poll imports per poll (each copies files and makes an undo point): the rest wait a tick.
-- The text of the daemon's refusal of a spool file (`inbox/rejected/<name>.error.txt`), or nil.
function M.rejection(spool, name)
  local text = M.read_file(M.join(spool, "inbox", "rejected", name .. ".error.txt"))
  if not text then return nil end
  text = M.trim((text:gsub("[\r\n]+", " ")))
  return text ~= "" and text or "refused"
end

-- A job with no status.json. Still in the inbox: it waits for the engine. Refused (its file in inbox/rejected/
-- with the reason beside it, e.g. a wrong token): failed with that reason, at once. Neither for W.status_grace
-- seconds (the engine removes the inbox file just before it writes the first status): failed (or, being
-- cancelled, cancelled) with a line that says what may have happened, instead of "waiting" for ever.
local function no_status(ui, e, now)
  local r = e.record
  if M.file_exists(M.join(r.spool, "inbox", r.id .. ".json")) then e.no_status_since = nil return end
  local refused = M.rejection(r.spool, r.id .. ".json")
  if refused then
    finish(e, r.state == "cancelling" and "cancelled" or "failed", "refused by the engine: " .. refused)
    M.log(ui, r.label .. ": " .. r.message)
    return
  end
  e.no_status_since = e.no_status_since or now
  if now - e.no_status_since < W.status_grace then return end
  local why = string.format("the engine has no record of this job (no status in %d s, and it is no longer in " ..
    "the inbox): refused, or its results deleted after the engine's --keep-days; see %s", W.status_grace,
    M.join(r.spool, "aiedit.log"))
  finish(e, r.state == "cancelling" and "cancelled" or "failed", why)
  M.log(ui, r.label .. ": " .. r.message)
end

function M.update_job(ui, e)
  local r = e.record
  if not M.ACTIVE[r.state] or r.state == "rendering" then return end
  local st = M.read_status(r)
  if not st then return no_status(ui, e, reaper.time_precise()) end
  e.no_status_since = nil
  local state = M.val(st.state) or "queued"
  r.stage = M.val(st.stage) or state
  r.progress = tonumber(M.val(st.progress)) or r.progress or 0
  -- which device/host runs it (several workers): absent in old daemons (keep), null once requeued (clear)
  if st.worker ~= nil then r.worker = M.val(st.worker) end
  if st.model ~= nil and M.val(st.model) then r.model = M.val(st.model) end
  -- when it started: the status's "created" (accepted; a queued wait counts too), else when first seen running
  if state == "running" and not r.started then r.started = math.floor(tonumber(M.val(st.created)) or os.time()) end
  if r.state == "cancelling" and state ~= "done" and state ~= "failed" and state ~= "cancelled" then
    local refused = M.rejection(r.spool, "cancel-" .. r.id .. ".json")
    if refused and not e.cancel_refused then -- the engine would not cancel it: the job goes on
      e.cancel_refused = true
      r.state = state
      M.log(ui, r.label .. ": could not cancel: " .. refused)
      return
    end
  end
  if state == "done" then
    if r.state == "cancelling" then
      finish(e, "cancelled", "finished before the cancel arrived: not imported; files kept in " ..
        M.join(r.spool, "jobs", r.id, "takes"))
    else
      local wait = M.import_wait(e.proj, r, M.row_item(e))
      if wait then -- e.g. an unsaved project: the takes wait in the spool, the job stays listed
        if r.waiting ~= wait then M.log(ui, r.label .. ": " .. wait) end
        r.state, r.waiting = "running", wait
        return
      end
      if ui.imports_left <= 0 then return end
      ui.imports_left = ui.imports_left - 1
      local ok, msg, kind = M.import_result(e.proj, r, st)
      if kind == "wait" then
        if r.waiting ~= msg then M.log(ui, r.label .. ": " .. msg) end
        r.state, r.waiting = "running", msg
        return
      end
      finish(e, ok and "imported" or (kind or "failed"), msg)
      if ok then e.status = st end
    end
    M.log(ui, r.label .. ": " .. r.message)
  elseif state == "failed" then
    finish(e, "failed", M.val(st.error) or "failed")
    M.log(ui, r.label .. ": failed: " .. r.message)
  elseif state == "cancelled" then
    finish(e, "cancelled", M.val(st.error) or "cancelled")
  elseif r.state ~= "cancelling" then
    r.state = state
  end
end

function M.request_cancel(ui, e)
  local r = e.record
  if not M.ACTIVE[r.state] or r.state == "cancelling" or not M.row_alive(ui, e) then return end
  if r.state == "rendering" then
    if e.render then M.render_abort(e.render) e.render, ui.renders[e] = nil, nil end
    finish(e, "cancelled", "cancelled before it was sent")
    M.save_row(ui, e)
    return
  end
  local how, err = M.cancel(r)
  if how == "withdrawn" then
    finish(e, "cancelled", "cancelled before the engine picked it up")
  elseif how then
    r.state, r.waiting = "cancelling", nil
  else
    M.log(ui, "could not cancel " .. r.id .. ": " .. tostring(err))
  end
  M.save_row(ui, e)
end

-- Open tabs now: ident -> {proj, file}, and one string of them (a change means a tab was opened, closed, or
-- holds another project file).
local function open_projects()
  local map, parts = {}, {}
  for i, p in ipairs(M.projects()) do
    local ident = tostring(p.proj) .. "\n" .. p.file
    map[ident] = p
    parts[i] = ident
  end
  return map, table.concat(parts, "\t")
end

-- Loads the records of every open project not yet known. At the first load, jobs that ended in an
-- earlier session are forgotten and "missing" ones retried (the project may have been reopened).
-- The ReaImGui window keeps finished jobs listed across sessions (their takes can still be played, compared and
-- kept) until "Clear finished", at most this many per project (the oldest go first); the plain window forgets them.
M.KEEP_FINISHED = 50

local function rescan(ui, first)
  for ident, p in pairs(ui.open_projects) do
    local proj = p.proj
    local finished = {}
    for _, x in ipairs(M.registry_scan(proj, ui.known[ident])) do
      local r = x.record
      local e = { proj = proj, ident = ident, key = x.key, record = r, text = x.text }
      ui.known[ident] = ui.known[ident] or {}
      ui.known[ident][x.id:lower()] = true
      if first and r.state == "missing" then
        r.state = "running"
        ui.rows[#ui.rows + 1] = e
      elseif first and not M.ACTIVE[r.state] then
        finished[#finished + 1] = e
      else
        ui.rows[#ui.rows + 1] = e
      end
    end
    table.sort(finished, function(a, b) return (a.record.finished or 0) > (b.record.finished or 0) end)
    for i, e in ipairs(finished) do
      if ui.keep_finished and i <= M.KEEP_FINISHED then
        ui.rows[#ui.rows + 1] = e
      else
        M.registry_remove(proj, e.key)
        if e.record.job_file then os.remove(e.record.job_file) end
      end
    end
  end
end

-- Rows whose tab was closed, or now holds another project, go (their records are in that project's file:
-- opening it again loads them again). So do rows whose record left the project.
local function forget_closed(ui)
  local keep = {}
  for _, e in ipairs(ui.rows) do
    if ui.open[e.ident] and not e.gone then keep[#keep + 1] = e
    else
      if e.render then M.render_abort(e.render) e.render, ui.renders[e] = nil, nil end
      -- a closed tab's rows all go, so its ids may be read again; a gone record stays known (it is not there)
      if not ui.open[e.ident] then ui.known[e.ident] = nil end
    end
  end
  ui.rows = keep
end

local function refresh_projects(ui, force)
  local map, set = open_projects()
  ui.open = {}
  for ident in pairs(map) do ui.open[ident] = true end
  ui.open_projects = map
  if force or set ~= ui.projects then
    ui.projects = set
    return true
  end
  return false
end

local function poll(ui)
  -- rescan the bookkeeping only when a script queued jobs or the open projects changed (known ids are skipped)
  local rev = reaper.GetExtState(M.SECTION, "jobs_rev")
  local changed = refresh_projects(ui)
  if rev ~= ui.rev or changed then
    ui.rev = rev
    forget_closed(ui)
    rescan(ui, false)
  end
  local active, n = {}, #ui.rows
  for _, e in ipairs(ui.rows) do
    if M.ACTIVE[e.record.state] and ui.open[e.ident] then active[#active + 1] = e end -- tabs just enumerated
  end
  ui.imports_left = W.imports_per_poll
  -- round robin over at most per_poll jobs: the cost per tick stays flat however many jobs there are
  local count = math.min(#active, W.per_poll)
  for k = 1, count do
    local e = active[((ui.cursor + k - 1) % #active) + 1]
    if not still_ours(e) then
      e.gone = true -- the tab now holds another project that was never saved (same pointer, no file)
    else
      local ok, err = pcall(M.update_job, ui, e)
      if not ok then
        finish(e, "failed", "error while updating: " .. tostring(err))
        M.log(ui, e.record.label .. ": " .. e.record.message)
      end
      M.save_row(ui, e)
    end
  end
  ui.cursor = #active > 0 and (ui.cursor + count) % #active or 0
  local gone = false
  for _, e in ipairs(ui.rows) do gone = gone or e.gone end
  if gone then forget_closed(ui) end
  local still = 0
  for _, e in ipairs(ui.rows) do if M.ACTIVE[e.record.state] then still = still + 1 end end
  ui.active = still
  AIEDIT_JOBS_ACTIVE = still -- for test harnesses: how many jobs are still running
  return n
end

-- One rendering job at a time gets a slice per tick (REAPER renders on its UI thread: two at once would not
-- finish sooner, only make each tick longer).
local function render_some(ui)
  for _, e in ipairs(ui.rows) do
    if e.record.state == "rendering" then
      if reaper.ValidatePtr2(0, e.proj, "ReaProject*") and ui.open[e.ident] then
        local ok, err = pcall(render_tick, ui, e)
        if not ok then finish(e, "failed", "render error: " .. tostring(err)) end
        M.save_row(ui, e)
        return true
      end
    end
  end
  return false
end

-- "Yes: start it now" cannot see whether the program started (ExecProcess does not wait): when no heartbeat
-- appears within W.engine_start_grace seconds, the window says so, once.
local function check_engine_start(ui, now)
  local started = reaper.GetExtState(M.SECTION, "engine_start")
  if started == "" then return end
  if ui.engine then reaper.DeleteExtState(M.SECTION, "engine_start", false) return end
  local t, cmd = started:match("^([%d%.]+)\t(.*)$")
  t = tonumber(t)
  if not t or now - t < W.engine_start_grace then return end
  reaper.DeleteExtState(M.SECTION, "engine_start", false)
  M.log(ui, "the engine did not start within " .. W.engine_start_grace .. " s: " .. tostring(cmd) ..
    "  (set its full path in AI edit settings; `aiedit doctor` prints it)")
end

---------------------------------------------------------------------------------------------
-- Row actions (both windows)
---------------------------------------------------------------------------------------------

M.FINISHED = { imported = true, failed = true, cancelled = true, missing = true }

-- Removes finished rows from the window and their records from their projects (the takes stay where they are).
function M.clear_finished(ui)
  local keep = {}
  for _, e in ipairs(ui.rows) do
    if M.FINISHED[e.record.state] and M.row_alive(ui, e) then
      reaper.SetProjExtState(e.proj, M.JOBS_SECTION, e.key, "")
      if e.record.job_file then os.remove(e.record.job_file) end
      if ui.audition and ui.audition.e == e then M.audition_stop(ui) end
    else
      keep[#keep + 1] = e
    end
  end
  ui.rows = keep
  ui.sel = math.min(ui.sel or 0, #keep)
end

-- Sends a failed or cancelled job again under a new id (the engine keeps the old one's files): from the copy of
-- the job the scripts keep (SPOOL/renders/<id>.job.json); an item that had to be rendered is rendered again.
function M.retry(ui, e)
  local r = e.record
  if not (r.state == "failed" or r.state == "cancelled") or not M.row_alive(ui, e) then return false end
  local job, err = M.pending_job(r)
  if not job then M.log(ui, r.label .. ": cannot retry: " .. tostring(err)) return false end
  local id = M.new_job_id(r.item, r.spool)
  local old_id, old_key, old_file = r.id, e.key, r.job_file
  job.id, job.token = id, nil
  local nr = {}
  for k, v in pairs(r) do nr[k] = v end
  nr.id, nr.message, nr.finished, nr.worker, nr.started, nr.waiting = id, nil, nil, nil, nil, nil
  nr.progress, nr.stage, nr.submitted, nr.kept, nr.scores, nr.best = 0.0, "queued", os.time(), nil, nil, nil
  if r.how == "render" then
    nr.rendered = M.join(r.spool, "renders", id .. ".wav")
    job.source.path = nr.rendered
    nr.state, nr.stage = "rendering", "rendering"
  else
    nr.state = "submitted"
  end
  local jf, jerr = M.write_atomic(M.join(r.spool, "renders"), id .. ".job.json", M.json_encode(job))
  if not jf then M.log(ui, r.label .. ": cannot retry: " .. tostring(jerr)) return false end
  nr.job_file = jf
  if nr.state == "submitted" then
    local token = M.get_setting("token")
    local sent = {}
    for k, v in pairs(job) do sent[k] = v end
    if token ~= "" then sent.token = token end
    local ok, werr = M.submit(r.spool, sent)
    if not ok then os.remove(jf) M.log(ui, r.label .. ": cannot retry: " .. tostring(werr)) return false end
  end
  reaper.SetProjExtState(e.proj, M.JOBS_SECTION, old_key, "")
  if old_file then os.remove(old_file) end
  e.key, e.record, e.text, e.job, e.status, e.results = id, nr, nil, nil, nil, nil
  e.no_status_since, e.cancel_refused = nil, nil
  ui.known[e.ident] = ui.known[e.ident] or {}
  ui.known[e.ident][id:lower()] = true
  ui.known[e.ident][old_id:lower()] = true
  e.text = M.registry_write(e.proj, nr)
  M.log(ui, r.label .. ": sent again as " .. id)
  return true
end

-- How many rows a "Cancel all" would cancel.
function M.cancellable(ui)
  local n = 0
  for _, e in ipairs(ui.rows) do if M.ACTIVE[e.record.state] and e.record.state ~= "cancelling" then n = n + 1 end end
  return n
end

function M.cancel_all(ui)
  for _, e in ipairs(ui.rows) do M.request_cancel(ui, e) end
end

-- Selects the row's item alone and brings it into view (its project tab first), so a click on a row shows where
-- the job belongs.
function M.show_row_item(ui, e)
  if not M.row_alive(ui, e) then return end
  if reaper.EnumProjects(-1, "") ~= e.proj then
    if not reaper.SelectProjectInstance then M.log(ui, "switch to the item's project tab to see it") return end
    reaper.SelectProjectInstance(e.proj)
  end
  local item = M.row_item(e)
  if not item then return end
  reaper.SelectAllMediaItems(e.proj, false)
  reaper.SetMediaItemSelected(item, true)
  local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
  if reaper.GetPlayStateEx(e.proj) & 1 == 0 then reaper.SetEditCurPos2(e.proj, pos, true, false) end
  reaper.SetOnlyTrackSelected(reaper.GetMediaItemTrack(item))
  reaper.Main_OnCommand(40913, 0) -- Track: Vertical scroll selected tracks into view
  reaper.UpdateArrange()
end

-- "0:42"
function M.clock_text(seconds)
  seconds = math.max(0, math.floor(seconds + 0.5))
  if seconds >= 3600 then
    return string.format("%d:%02d:%02d", seconds // 3600, (seconds % 3600) // 60, seconds % 60)
  end
  return string.format("%d:%02d", seconds // 60, seconds % 60)
end

-- What the progress bar says: stage, time so far and an estimate of what is left (from the progress so far).
function M.progress_text(r, now)
  now = now or os.time()
  if r.state == "rendering" then return string.format("rendering %d%%", math.floor((r.progress or 0) * 2000 + 0.5)) end
  if r.state == "submitted" then return "waiting " .. M.clock_text(now - (r.submitted or now)) end
  if not M.ACTIVE[r.state] then return "" end
  local from = r.started or r.submitted or now
  local spent = now - from
  local text = (r.stage or r.state) .. " " .. M.clock_text(spent)
  local p = r.progress or 0
  if p >= 0.05 and p < 1 and spent > 0 then text = text .. " · ~" .. M.clock_text(spent * (1 - p) / p) .. " left" end
  return text
end

-- "0.30 · 0.50 · 0.70", and once imported with each take's score: "0.30 (1.29) · 0.50 (1.38 ★) · ...".
function M.strengths_text(r)
  local parts = {}
  for i, eta in ipairs(r.etas or {}) do
    local s = string.format("%.2f", tonumber(eta) or 0)
    local score = r.scores and r.scores[i]
    if type(score) == "number" then
      s = s .. string.format(" (%.2f%s)", score, (r.best == i - 1) and " ★" or "")
    end
    parts[#parts + 1] = s
  end
  return table.concat(parts, " · ")
end

---------------------------------------------------------------------------------------------
-- The window: one model, two views (ReaImGui when installed, else a plain gfx window)
---------------------------------------------------------------------------------------------

function M.new_window_state(keep_finished)
  local ui = { rows = {}, targets = {}, last_poll = -1e9, last_engine = -1e9, last_beat = -1e9,
               known = {}, cursor = 0, scroll = 0, messages = {}, renders = {}, sel = 0,
               spool = M.spool_dir(), open = {}, imports_left = W.imports_per_poll, keep_finished = keep_finished }
  refresh_projects(ui, true)
  rescan(ui, true)
  ui.rev = reaper.GetExtState(M.SECTION, "jobs_rev")
  return ui
end

-- One tick of the model: heartbeat, engine check, a render slice, a poll when due, the audition's end.
function M.window_tick(ui, now)
  if now - ui.last_beat >= 1 then
    ui.last_beat = now
    reaper.SetExtState(M.SECTION, "window_heartbeat", tostring(now), false)
  end
  if now - ui.last_engine >= W.engine_every then
    ui.last_engine = now
    ui.engine = M.engine_info(ui.spool)
    check_engine_start(ui, now)
  end
  render_some(ui)
  if now - ui.last_poll >= W.poll_every then
    ui.last_poll = now
    poll(ui)
  end
  if ui.audition then M.audition_tick(ui) end
end

function M.close_window(ui)
  if ui.closed then return false end
  ui.closed = true
  if ui.audition then M.audition_stop(ui) end
  for e in pairs(ui.renders) do if e.render then M.render_abort(e.render) e.render = nil end end
  reaper.DeleteExtState(M.SECTION, "window_heartbeat", false)
  if reaper.set_action_options then reaper.set_action_options(8) end -- toolbar button off
  return true
end

-- ReaImGui's API table (through its shim, API 0.9), or nil when it is not installed (or older than 0.9).
function M.imgui_api()
  if M.imgui_loaded ~= nil then return M.imgui_loaded or nil end
  M.imgui_loaded = false
  if not (reaper.APIExists and reaper.APIExists("ImGui_GetBuiltinPath")) then return nil end
  local saved = package.path
  package.path = reaper.ImGui_GetBuiltinPath() .. "/?.lua;" .. package.path
  local ok, api = pcall(function() return require("imgui")("0.9") end)
  package.path = saved
  if ok and type(api) == "table" then M.imgui_loaded = api end
  return M.imgui_loaded or nil
end

-- Without ReaImGui the plain window does the same work; say once how to get the better one, and open ReaPack's
-- package browser at it.
function M.imgui_hint(ui)
  if reaper.GetExtState(M.SECTION, "imgui_hint") == "shown" then return end
  reaper.SetExtState(M.SECTION, "imgui_hint", "shown", true)
  M.log(ui, "For the full jobs window (play, compare and keep takes), install ReaImGui: Extensions > ReaPack > " ..
    "Browse packages > ReaImGui (ReaTeam Extensions), then restart REAPER.")
  if reaper.ReaPack_BrowsePackages then reaper.ReaPack_BrowsePackages("ReaImGui") end
end

-- Runs the jobs window. Called by the "AI edit jobs" action only: relaunching that action closes it
-- (set_action_options 1 = auto-terminate on relaunch, 4 = toggle on).
function M.run_jobs_window()
  -- REAPER 7.03+; older versions show the task-control dialog on relaunch instead
  if reaper.set_action_options then reaper.set_action_options(1 | 4) end
  local ImGui = M.imgui_api()
  local ui = M.new_window_state(ImGui ~= nil)
  if ImGui then return M.run_imgui_window(ui, ImGui) end
  M.imgui_hint(ui)
  return M.run_gfx_window(ui)
end

return M
