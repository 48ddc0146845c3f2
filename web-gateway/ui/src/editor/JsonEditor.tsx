// The JSON editor (CodeMirror 6), loaded lazily so the initial bundle stays small.
// CodeMirror injects its styles through constructable stylesheets (adoptedStyleSheets), which a
// `style-src 'self'` CSP allows; no <style> element is added.
import CodeMirror from "@uiw/react-codemirror";
import { json, jsonParseLinter } from "@codemirror/lang-json";
import { linter, lintGutter } from "@codemirror/lint";
import { EditorView } from "@codemirror/view";
import { useEffect, useMemo, useState } from "react";

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
}

export default function JsonEditor({ id, label, value, onChange, minHeight = "8rem" }: JsonEditorProps) {
  const dark = usePrefersDark();
  const extensions = useMemo(
    () => [
      json(),
      linter(jsonParseLinter()),
      lintGutter(),
      EditorView.contentAttributes.of({ "aria-label": label, id }),
    ],
    [label, id],
  );
  return (
    <div className="json-editor" data-testid={id}>
      <CodeMirror
        value={value}
        onChange={onChange}
        extensions={extensions}
        theme={dark ? "dark" : "light"}
        minHeight={minHeight}
        maxHeight="28rem"
        basicSetup={{ closeBrackets: false, autocompletion: false }}
      />
    </div>
  );
}
