-- The fake ReaImGui's builtin shim (see fake_imgui.lua): `require 'imgui' '0.9'` returns the API table.
return function(api_version) return reaper.ImGui__fake(api_version) end
