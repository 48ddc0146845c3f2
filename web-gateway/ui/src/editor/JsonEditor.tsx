// The JSON editor (CodeMirror 6), loaded lazily so the initial bundle stays small.
//
// CodeMirror injects its styles at run time. In a document it does so with a <style> element,
// which the console's CSP (`style-src 'self'`, no 'unsafe-inline', no nonce) blocks; in a shadow
// root it uses a constructable stylesheet (adoptedStyleSheets), which CSP does not govern. So the
// editor lives in a shadow root of its host element. Inherited properties (font, color) still
// cross the boundary; the rest of its look comes from the CodeMirror theme below.
import CodeMirror from "@uiw/react-codemirror";
import { json, jsonParseLinter } from "@codemirror/lang-json";
import { linter, lintGutter } from "@codemirror/lint";
import { EditorView } from "@codemirror/view";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { createPortal } from "react-dom";

const darkQuery = "(prefers-color-scheme: dark)";

function usePrefersDark(): boolean {
  const [dark, setDark] = useState(() => window.matchMedia?.(darkQuery).matches ?? false);
  useEffect(() => {
    const m = window.matchMedia?.(darkQuery);
    if (!m) return;
    const on = (e: MediaQueryListEvent) => setDark(e.matches);
    m.addEventListener("change", on);
    return () => m.removeEventListener("change", on);
  }, []);
  return dark;
}

export interface JsonEditorProps {
  id: string;
  label: string;
  value: string;
  onChange: (text: string) => void;
  minHeight?: string;
  /** Shown but not editable (a disabled form). */
  readOnly?: boolean;
}

const look = EditorView.theme({
  "&": { fontSize: "0.9rem" },
  ".cm-scroller": { fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace' },
  "&.cm-focused": { outline: "3px solid #f0a000", outlineOffset: "-3px" },
});

export default function JsonEditor({ id, label, value, onChange, minHeight = "8rem", readOnly = false }: JsonEditorProps) {
  const dark = usePrefersDark();
  const host = useRef<HTMLDivElement>(null);
  const [shadow, setShadow] = useState<ShadowRoot | null>(null);
  useLayoutEffect(() => {
    const el = host.current!;
    setShadow(el.shadowRoot ?? el.attachShadow({ mode: "open" }));
  }, []);
  const extensions = useMemo(
    () => [
      json(),
      linter(jsonParseLinter()),
      lintGutter(),
      look,
      EditorView.contentAttributes.of({ "aria-label": label, id }),
    ],
    [label, id],
  );
  return (
    <div ref={host} className="json-editor" data-testid={id}>
      {shadow
        ? createPortal(
            <CodeMirror
              value={value}
              onChange={onChange}
              extensions={extensions}
              theme={dark ? "dark" : "light"}
              minHeight={minHeight}
              readOnly={readOnly}
              editable={!readOnly}
              maxHeight="28rem"
              root={shadow}
              basicSetup={{ closeBrackets: false, autocompletion: false }}
            />,
            shadow,
          )
        : null}
    </div>
  );
}
