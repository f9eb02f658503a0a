// Keyboard shortcuts: one key per verb (see the panel's key list); Ctrl+Z / Ctrl+Y /
// Ctrl+Shift+Z undo and redo; typing in a form field never triggers them.

/** call keys[key]() on keydown while isReady() (single characters in lower case) */
export function bindKeys(keys, isReady) {
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || e.altKey || e.metaKey) return;
    if (!isReady()) return;
    let key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (e.ctrlKey) {
      if (key === "z" && e.shiftKey) key = "y";
      else if (key !== "z" && key !== "y") return;
    }
    const action = keys[key];
    if (action) {
      e.preventDefault();
      action();
    }
  });
}

/** move a range input by `step` within its bounds and tell its listeners */
export function nudge(input, step) {
  input.value = String(Math.max(Number(input.min), Math.min(Number(input.max), Number(input.value) + step)));
  input.dispatchEvent(new Event("input"));
}
