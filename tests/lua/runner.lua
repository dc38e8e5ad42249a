--[[
Runs aiedit REAPER scripts against the fake REAPER.

  lua5.4 tests/lua/runner.lua SCENARIO.json

The scenario holds the project (tracks/items/takes/sources), time selection, ExtState, queued
dialog answers and a list of steps:
  {"run": "AI edit selected items.lua"}      run a script (from scenario.script_dir)
  {"defer": N}                               run N defer cycles (REAPER UI ticks)
  {"click": "cancel:<id>" | "cancel_all"}    click a button in the jobs window
  {"key": 27}                                queue a key for gfx.getchar (then run a cycle)
  {"delete_item": "<guid>"}                  the user deletes an item
  {"defer_until_idle": {"timeout": 60, "sleep": 0.2}}  run cycles until no job is active
  {"switch_project": 2}                      the user switches to project tab 2
  {"close_project": 2}                       the user closes project tab 2
  {"edit_item": {"guid": ..., "item": {...}, "take": {...}}}  the user trims/moves an item
  {"wheel": -120}                            scroll the jobs window (mouse wheel), then run a cycle
  {"reset_counts": true}                     zero the API call / file read counters
  {"open_in_tab": {"index": 1, "project": {...}}}  File > Open in tab 1 (the same ReaProject*)
  {"write_file": {"path": ..., "text": ...}}  something outside REAPER writes a file (the daemon, a status)
  {"advance_clock": 5}                       time passes without a UI tick (REAPER busy, a modal dialog)
  {"save_project": {"index": 1, "file": ..., "media": ...}}  File > Save project as
  {"imgui_click": "Cancel##<id>"}           click a ReaImGui widget (scenario "imgui": true), then a cycle
  {"imgui_key": "Space"} / {"imgui_type": {"label", "value"}} / {"imgui_window": {...}} / {"imgui_close": true}
  {"set_play_state": 5}                      REAPER starts recording (GetPlayState bits), 0 stops
  {"select_items": ["<guid>", ...]}          the user selects these items only
  {"edit_cursor": 3.5}                       the user moves the edit cursor
Scenario "windows": true runs the scripts as on Windows (separator, quoting); "getenv" and "resource_path" set
what os.getenv and reaper.GetResourcePath return (see fake_reaper.lua).
Prints the resulting state (project, ExtState, undo log, messages, ...) as JSON on stdout.
]]

local here = arg[0]:match("^(.*[/\\])") or "./"
local F = dofile(here .. "fake_reaper.lua")
F.here = here
reaper, gfx = F.reaper, F.gfx

local scenario_path = assert(arg[1], "usage: runner.lua SCENARIO.json")
local script_dir = here .. "../../reaper_scripts/"
package.path = script_dir .. "?.lua;" .. script_dir .. "?/init.lua;" .. package.path
local lib = require("aiedit") -- for JSON; the scripts require the same modules
local fh = assert(io.open(scenario_path, "rb"))
local scenario = assert(lib.json_decode(fh:read("a")))
fh:close()
script_dir = scenario.script_dir or script_dir
F.load(scenario)
if scenario.dt then F.dt = scenario.dt end
if scenario.windows then lib.is_windows, lib.sep = true, "\\" end -- a Windows REAPER (paths, quoting)

local errors = lib.array()
local function guarded(what, fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then errors[#errors + 1] = what .. ": " .. tostring(err) end
  return ok
end

local function run_cycles(n) for _ = 1, n do guarded("defer", F.run_defer_cycle) end end

local function until_idle(opts)
  local deadline = os.time() + (opts.timeout or 60)
  local cycles = 0
  while os.time() < deadline do
    run_cycles(1)
    cycles = cycles + 1
    if #F.deferred == 0 then break end
    if cycles > 2 and AIEDIT_JOBS_ACTIVE == 0 then break end
    if opts.sleep and opts.sleep > 0 then os.execute("sleep " .. opts.sleep) end
  end
  return cycles
end

for _, step in ipairs(scenario.steps or {}) do
  if step.run then
    F.script_path = script_dir .. step.run
    guarded("run " .. step.run, F.launch, F.script_path)
  elseif step.run_path then -- run a script by its full path (e.g. REAPER running Scripts/__startup.lua)
    F.script_path = step.run_path
    guarded("run " .. step.run_path, F.launch, step.run_path)
  elseif step.defer then
    run_cycles(step.defer)
  elseif step.click then
    guarded("click " .. step.click, F.click, step.click)
  elseif step.key then
    F.keys[#F.keys + 1] = step.key
  elseif step.close_project then
    F.close_project(step.close_project)
  elseif step.switch_project then
    F.switch_project(step.switch_project)
  elseif step.edit_item then
    F.edit_item(step.edit_item.guid, step.edit_item)
  elseif step.wheel then
    gfx.mouse_wheel = step.wheel
    run_cycles(1)
  elseif step.open_in_tab then
    F.open_in_tab(step.open_in_tab.index, step.open_in_tab.project)
  elseif step.save_project then
    F.save_project(step.save_project.index, step.save_project.file, step.save_project.media)
  elseif step.write_file then
    local fh2 = assert(io.open(step.write_file.path, "wb"))
    fh2:write(step.write_file.text)
    fh2:close()
  elseif step.advance_clock then
    F.clock = F.clock + step.advance_clock
  elseif step.imgui_click then -- click a ReaImGui widget (label, visible label or "<id>/<label>"), one cycle
    F.imgui_driver.queue_click(step.imgui_click)
    run_cycles(1)
  elseif step.imgui_key then -- press a key ("Space", "UpArrow", "A", ...) for one ReaImGui frame
    F.imgui_driver.queue_key(step.imgui_key)
    run_cycles(1)
  elseif step.imgui_type then -- type a value into a field: {"label": ..., "value": ...}, one cycle
    F.imgui_driver.queue_type(step.imgui_type.label, step.imgui_type.value)
    run_cycles(1)
  elseif step.imgui_window then -- the user moves, resizes or docks the window: {"x", "y", "w", "h", "dock"}
    F.imgui_driver.queue_window(step.imgui_window)
    run_cycles(1)
  elseif step.imgui_close then -- the user clicks the window's close button
    F.imgui.close_window = true
    run_cycles(1)
  elseif step.set_play_state then
    F.set_play_state(step.set_play_state)
  elseif step.select_items then -- the user selects these items (GUIDs) and nothing else
    local want = {}
    for _, g in ipairs(step.select_items) do want[g] = true end
    for _, proj in ipairs(F.projects) do
      for _, tr in ipairs(proj.tracks) do for _, it in ipairs(tr.items) do it.selected = want[it.guid] or false end end
    end
  elseif step.edit_cursor then
    F.edit_cursor = step.edit_cursor
  elseif step.reset_counts then
    F.counts, F.opens = {}, {}
  elseif step.delete_item then
    F.delete_item(step.delete_item)
  elseif step.defer_until_idle then
    until_idle(step.defer_until_idle)
  else
    errors[#errors + 1] = "unknown step " .. lib.json_encode(step)
  end
end

local out = F.dump(lib)
out.errors = errors
io.write(lib.json_encode(out), "\n")
