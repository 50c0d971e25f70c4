// A node widget that shows a drawing: a canvas laid over a box, so that the box's size comes from the node (the
// classic canvas sizes DOM widgets) or from its minimum height (Nodes 2.0 sizes them by their content), never from
// the canvas's own pixels. A canvas in the flow would feed its drawn height back into the box on every redraw (its
// inline gap, or the device pixel ratio) and grow the node without end.

export function canvasWidget(node, name, type, minHeight, draw) {
  let widget = node.widgets?.find((w) => w.name === name);
  if (widget) return widget;
  const box = document.createElement("div");
  box.style.cssText = `position: relative; width: 100%; height: 100%; min-height: ${minHeight}px;`;
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "position: absolute; inset: 0; width: 100%; height: 100%; display: block;";
  box.appendChild(canvas);
  widget = node.addDOMWidget(name, type, box, {
    serialize: false, // display only: keeps widgets_values and API prompts unchanged
    hideOnZoom: false,
    getMinHeight: () => parseFloat(box.style.minHeight) || minHeight,
  });
  widget.box = box;
  widget.canvas = canvas;
  widget.data = null;
  new ResizeObserver(() => draw(canvas, widget.data)).observe(box);
  return widget;
}
