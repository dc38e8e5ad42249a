-- @noindex
--[[ The jobs window without ReaImGui: a plain gfx window with one row per job (progress, state, Cancel).
It draws what the model in ui.lua holds; ReaImGui's window (imwin.lua) adds audition, compare and keep. ]]
local M = require("aiedit.core")

local W = { row_h = 24, pad = 8, header = 34, footer = 70 }


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
    gfx.drawstr(M.state_text(r))
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
    local n = M.cancellable(ui)
    if n == 0 then return end
    local q = string.format("Cancel all %d running AI edit job%s?", n, n == 1 and "" or "s")
    if reaper.ShowMessageBox(q, "AI edit jobs", 4) == 6 then M.cancel_all(ui) end
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
  if M.close_window(ui) then gfx.quit() end
end

-- The plain window (no ReaImGui): the same jobs, drawn with gfx.
function M.run_gfx_window(ui)
  gfx.init("AI edit jobs", 760, 300)
  -- a TrueType font draws η and · on every platform (the default bitmap font does not)
  gfx.setfont(1, M.is_windows and "Segoe UI" or "Arial", 15)
  reaper.atexit(function() close(ui) end)
  local function loop()
    local ch = gfx.getchar()
    if ch == 27 or ch < 0 then close(ui) return end -- Esc, or the window was closed
    M.window_tick(ui, reaper.time_precise())
    draw(ui)
    handle_mouse(ui)
    reaper.defer(loop)
  end
  loop()
  return true
end

return M
