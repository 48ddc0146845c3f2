// A plain <textarea> until CodeMirror's chunk has loaded; the same props either way.
import { lazy, Suspense } from "react";
import type { JsonEditorProps } from "../editor/JsonEditor";

const Editor = lazy(() => import("../editor/JsonEditor"));

export function JsonEditor(props: JsonEditorProps) {
  return (
    <Suspense
      fallback={
        <textarea
          id={props.id}
          className="json-fallback"
          aria-label={props.label}
          value={props.value}
          onChange={(e) => props.onChange(e.target.value)}
          rows={6}
          readOnly={props.readOnly}
        />
      }
    >
      <Editor {...props} />
    </Suspense>
  );
}
