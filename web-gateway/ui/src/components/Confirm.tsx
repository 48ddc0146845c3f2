// A confirmation before an action that is hard to take back (delete a type, archive an instance,
// accept a schema that current states break). A native modal <dialog>: the browser traps focus in
// it, Escape cancels, and focus starts on the safe choice (Cancel). It is portalled to <body>, so
// it may be opened from inside another form (a <form> must not contain a <form>).
import { useEffect, useId, useRef, type ReactNode } from "react";
import { createPortal } from "react-dom";

export function ConfirmDialog({
  title,
  children,
  confirmLabel,
  danger = false,
  confirmDisabled = false,
  onConfirm,
  onCancel,
}: {
  title: string;
  children: ReactNode;
  confirmLabel: string;
  /** The confirm button in the danger colour (deletions). */
  danger?: boolean;
  /** The confirm button disabled (until the user has typed what the dialog asks for). */
  confirmDisabled?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const cancelRef = useRef<HTMLButtonElement>(null);
  const titleId = useId();
  useEffect(() => {
    const d = ref.current!;
    // jsdom (the unit tests) has no showModal; an open dialog there is still a dialog.
    if (!d.open) {
      if (typeof d.showModal === "function") d.showModal();
      else d.setAttribute("open", "");
    }
    cancelRef.current?.focus();
    return () => {
      if (d.open && typeof d.close === "function") d.close();
    };
  }, []);
  return createPortal(
    <dialog
      ref={ref}
      className="dialog"
      aria-labelledby={titleId}
      onCancel={(e) => {
        // The browser's close request: let React unmount it instead of closing it behind React's back.
        e.preventDefault();
        onCancel();
      }}
      onKeyDown={(e) => {
        if (e.key === "Escape") {
          e.preventDefault();
          e.stopPropagation();
          onCancel();
        }
      }}
    >
      <form
        onSubmit={(e) => {
          e.preventDefault();
          // React events bubble through portals: the form this dialog was opened from must not
          // see this submit as its own.
          e.stopPropagation();
          if (!confirmDisabled) onConfirm();
        }}
      >
        <h2 id={titleId}>{title}</h2>
        <div className="dialog-body">{children}</div>
        <div className="actions">
          <button type="submit" className={danger ? "danger" : "primary"} disabled={confirmDisabled}>
            {confirmLabel}
          </button>
          <button type="button" ref={cancelRef} onClick={onCancel}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>,
    document.body,
  );
}
