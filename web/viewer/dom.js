// Small DOM helpers shared by the viewer's modules.

export const $ = (id) => document.getElementById(id);

/** the one-line message under the toolbar (red when isError) */
export function say(text, isError = false) {
  const el = $("message");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

/** replace a <select>'s options by one per item (value and text from the item) */
export function fillSelect(select, items, valueOf, textOf) {
  select.replaceChildren(...items.map((item) => {
    const o = document.createElement("option");
    o.value = valueOf(item);
    o.textContent = textOf(item);
    return o;
  }));
}
