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

local function state_text(r)
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

local function log(ui, msg)
  ui.messages[#ui.messages + 1] = msg
  if #ui.messages > 50 then table.remove(ui.messages, 1) end
end

-- A row may touch its project only while that tab is open and still holds the same project: a closed tab's
-- ReaProject* is invalid (ValidatePtr2), and File > Open in the same tab keeps the pointer but changes the file.
local function alive(ui, e)
  return reaper.ValidatePtr2(0, e.proj, "ReaProject*") and ui.open[e.ident] == true
end

-- The project still holds this job's record (under the key REAPER enumerated): false when the tab now holds
-- another project that was never saved (same pointer, same empty file name).
local function still_ours(e)
  local _, cur = reaper.GetProjExtState(e.proj, M.JOBS_SECTION, e.key)
  return cur ~= nil and cur ~= ""
end

local function save(ui, e)
  local text = M.record_text(e.record)
  if text ~= e.text and alive(ui, e) and still_ours(e) then
    reaper.SetProjExtState(e.proj, M.JOBS_SECTION, e.key, text)
    e.text = text
  end
end

local function finish(e, state, message)
  local r = e.record
  r.state, r.message, r.finished = state, message, os.time()
  if r.rendered then os.remove(r.rendered) r.rendered = nil end
  if r.job_file then os.remove(r.job_file) r.job_file = nil end
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
      if r.job_file then os.remove(r.job_file) end
      r.job, r.job_file, e.job, r.state, r.stage = nil, nil, nil, "submitted", "queued"
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
    log(ui, r.label .. ": " .. r.message)
    return
  end
  e.no_status_since = e.no_status_since or now
  if now - e.no_status_since < W.status_grace then return end
  local why = string.format("the engine has no record of this job (no status in %d s, and it is no longer in " ..
    "the inbox): refused, or its results deleted after the engine's --keep-days; see %s", W.status_grace,
    M.join(r.spool, "aiedit.log"))
  finish(e, r.state == "cancelling" and "cancelled" or "failed", why)
  log(ui, r.label .. ": " .. r.message)
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
  if state == "running" and not r.started then r.started = os.time() end
  if r.state == "cancelling" and state ~= "done" and state ~= "failed" and state ~= "cancelled" then
    local refused = M.rejection(r.spool, "cancel-" .. r.id .. ".json")
    if refused and not e.cancel_refused then -- the engine would not cancel it: the job goes on
      e.cancel_refused = true
      r.state = state
      log(ui, r.label .. ": could not cancel: " .. refused)
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
        if r.waiting ~= wait then log(ui, r.label .. ": " .. wait) end
        r.state, r.waiting = "running", wait
        return
      end
      if ui.imports_left <= 0 then return end
      ui.imports_left = ui.imports_left - 1
      local ok, msg, kind = M.import_result(e.proj, r, st)
      if kind == "wait" then
        if r.waiting ~= msg then log(ui, r.label .. ": " .. msg) end
        r.state, r.waiting = "running", msg
        return
      end
      finish(e, ok and "imported" or (kind or "failed"), msg)
      if ok then e.status = st end
    end
    log(ui, r.label .. ": " .. r.message)
  elseif state == "failed" then
    finish(e, "failed", M.val(st.error) or "failed")
    log(ui, r.label .. ": failed: " .. r.message)
  elseif state == "cancelled" then
    finish(e, "cancelled", M.val(st.error) or "cancelled")
  elseif r.state ~= "cancelling" then
    r.state = state
  end
end

function M.request_cancel(ui, e)
  local r = e.record
  if not M.ACTIVE[r.state] or r.state == "cancelling" or not alive(ui, e) then return end
  if r.state == "rendering" then
    if e.render then M.render_abort(e.render) e.render, ui.renders[e] = nil, nil end
    finish(e, "cancelled", "cancelled before it was sent")
    save(ui, e)
    return
  end
  local how, err = M.cancel(r)
  if how == "withdrawn" then
    finish(e, "cancelled", "cancelled before the engine picked it up")
  elseif how then
    r.state, r.waiting = "cancelling", nil
  else
    log(ui, "could not cancel " .. r.id .. ": " .. tostring(err))
  end
  save(ui, e)
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
local function rescan(ui, first)
  for ident, p in pairs(ui.open_projects) do
    local proj = p.proj
    for _, x in ipairs(M.registry_scan(proj, ui.known[ident])) do
      local r = x.record
      local e = { proj = proj, ident = ident, key = x.key, record = r, text = x.text }
      ui.known[ident] = ui.known[ident] or {}
      ui.known[ident][x.id:lower()] = true
      if first and r.state == "missing" then
        r.state = "running"
        ui.rows[#ui.rows + 1] = e
      elseif first and not M.ACTIVE[r.state] then
        M.registry_remove(proj, x.key)
      else
        ui.rows[#ui.rows + 1] = e
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
        log(ui, e.record.label .. ": " .. e.record.message)
      end
      save(ui, e)
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
        save(ui, e)
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
  log(ui, "the engine did not start within " .. W.engine_start_grace .. " s: " .. tostring(cmd) ..
    "  (set its full path in AI edit settings; `aiedit doctor` prints it)")
end

---------------------------------------------------------------------------------------------
-- Drawing and mouse
---------------------------------------------------------------------------------------------

local function hit(t, x, y) return x >= t.x and x < t.x + t.w and y >= t.y and y < t.y + t.h end

local function button(ui, id, label, x, y, w, h)
  gfx.set(0.3, 0.3, 0.3, 1)
  gfx.rect(x, y, w, h, 1)
  gfx.set(1, 1, 1, 1)
  gfx.x, gfx.y = x + 6, y + 3
  gfx.drawstr(label)
  ui.targets[#ui.targets + 1] = { id = id, x = x, y = y, w = w, h = h }
end

-- ", 2 workers (1 busy)" from daemon.json "workers" (several workers; absent in older daemons: "").
function M.workers_text(info)
  local ws = M.val(info.workers)
  if type(ws) ~= "table" or #ws == 0 then return "" end
  local busy = 0
  for _, w in ipairs(ws) do if type(w) == "table" and M.val(w.state) == "busy" then busy = busy + 1 end end
  return string.format(", %d worker%s (%d busy)", #ws, #ws == 1 and "" or "s", busy)
end

local function visible_rows() return math.max(1, math.floor((gfx.h - W.header - W.footer) / W.row_h)) end

local function draw(ui)
  ui.targets = {}
  gfx.set(0.12, 0.12, 0.12, 1)
  gfx.rect(0, 0, gfx.w, gfx.h, 1)
  gfx.set(1, 1, 1, 1)
  gfx.x, gfx.y = W.pad, W.pad
  local eng = ui.engine
  gfx.drawstr(eng and ("engine: running, model " .. tostring(M.val(eng.model) or "?") .. M.workers_text(eng))
    or ("engine not running: start it with  " .. M.start_command(ui.spool)))
  button(ui, "cancel_all", "Cancel all", gfx.w - 90 - W.pad, W.pad - 2, 90, 20)
  local y = W.header
  -- rows may have left since the last scroll (a tab closed, jobs cleared): never scroll past the end
  ui.scroll = math.max(0, math.min(ui.scroll, #ui.rows - visible_rows()))
  local first = ui.scroll + 1
  local last = math.min(#ui.rows, ui.scroll + visible_rows())
  for i = first, last do
    local r = ui.rows[i].record
    gfx.set(0.9, 0.9, 0.9, 1)
    gfx.x, gfx.y = W.pad, y + 4
    local where = r.worker and M.ACTIVE[r.state] and ("  ·  " .. r.worker) or "" -- e.g. cuda:1@studio-2
    gfx.drawstr((r.label ~= "" and r.label or r.id) .. "  ·  " .. (r.stage or "") .. where)
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
  if #ui.rows > last - first + 1 then
    gfx.set(0.6, 0.6, 0.6, 1)
    gfx.x, gfx.y = W.pad, y + 2
    gfx.drawstr(string.format("rows %d–%d of %d (mouse wheel scrolls)", first, last, #ui.rows))
  end
  gfx.set(0.7, 0.7, 0.7, 1)
  local my = gfx.h - W.footer + 6
  for i = math.max(1, #ui.messages - 2), #ui.messages do
    gfx.x, gfx.y = W.pad, my
    gfx.drawstr(ui.messages[i])
    my = my + 18
  end
  AIEDIT_HIT_TARGETS = ui.targets -- for test harnesses (the fake clicks these); harmless in REAPER
  gfx.update()
end

local function on_click(ui, id)
  if id == "cancel_all" then
    for _, e in ipairs(ui.rows) do M.request_cancel(ui, e) end
  else
    local jid = id:match("^cancel:(.+)$")
    for _, e in ipairs(ui.rows) do if e.record.id == jid then M.request_cancel(ui, e) end end
  end
end

local function handle_mouse(ui)
  if gfx.mouse_wheel ~= 0 then
    local step = gfx.mouse_wheel > 0 and -1 or 1
    gfx.mouse_wheel = 0
    ui.scroll = math.max(0, math.min(math.max(0, #ui.rows - visible_rows()), ui.scroll + step * 3))
  end
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

local function close(ui)
  if ui.closed then return end
  ui.closed = true
  for e in pairs(ui.renders) do if e.render then M.render_abort(e.render) e.render = nil end end
  reaper.DeleteExtState(M.SECTION, "window_heartbeat", false)
  if reaper.set_action_options then reaper.set_action_options(8) end -- toolbar button off
  gfx.quit()
end

-- Runs the jobs window. Called by the "AI edit jobs" action only: relaunching that action closes it
-- (set_action_options 1 = auto-terminate on relaunch, 4 = toggle on).
function M.run_jobs_window()
  -- REAPER 7.03+; older versions show the task-control dialog on relaunch instead
  if reaper.set_action_options then reaper.set_action_options(1 | 4) end
  local ui = { rows = {}, targets = {}, last_poll = -1e9, last_engine = -1e9, last_beat = -1e9,
               known = {}, cursor = 0, scroll = 0, messages = {}, renders = {},
               spool = M.spool_dir(), open = {}, imports_left = W.imports_per_poll }
  refresh_projects(ui, true)
  rescan(ui, true)
  ui.rev = reaper.GetExtState(M.SECTION, "jobs_rev")
  gfx.init("AI edit jobs", 760, 300)
  -- a TrueType font draws η and · on every platform (the default bitmap font does not)
  gfx.setfont(1, M.is_windows and "Segoe UI" or "Arial", 15)
  reaper.atexit(function() close(ui) end)
  local function loop()
    local now = reaper.time_precise()
    if now - ui.last_beat >= 1 then
      ui.last_beat = now
      reaper.SetExtState(M.SECTION, "window_heartbeat", tostring(now), false)
    end
    local ch = gfx.getchar()
    if ch == 27 or ch < 0 then close(ui) return end -- Esc, or the window was closed
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
    draw(ui)
    handle_mouse(ui)
    reaper.defer(loop)
  end
  loop()
  return true
end

return M
