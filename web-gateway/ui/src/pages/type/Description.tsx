// A type's description, editable in place by an admin (UpdateEntityType with only `description`,
// which keeps the schema and its version).
import { useState, type FormEvent } from "react";
import { useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { EntityTypeService } from "@temporal-state/client";
import { ErrorView } from "../../components/Status";

export function Description({ type, description, editable }: { type: string; description: string; editable: boolean }) {
  const [draft, setDraft] = useState<string | undefined>();
  const qc = useQueryClient();
  const update = useMutation(EntityTypeService.method.updateEntityType, {
    onSuccess: () => {
      setDraft(undefined);
      void qc.invalidateQueries();
    },
  });
  if (draft === undefined) {
    return (
      <div className="description">
        {description ? <p data-testid="type-description">{description}</p> : <p className="muted">No description.</p>}
        {editable ? (
          <button type="button" className="link-button" onClick={() => setDraft(description)}>
            Edit description
          </button>
        ) : null}
      </div>
    );
  }
  const submit = (e: FormEvent) => {
    e.preventDefault();
    update.mutate({ entityType: type, description: draft });
  };
  return (
    <form className="inline-form description-form" onSubmit={submit} aria-label="Edit the description">
      <label htmlFor="type-description-edit">Description</label>
      <input id="type-description-edit" value={draft} onChange={(e) => setDraft(e.target.value)} autoFocus />
      <button type="submit" className="primary" disabled={update.isPending || draft === description}>
        {update.isPending ? "Saving…" : "Save description"}
      </button>
      <button
        type="button"
        onClick={() => {
          update.reset();
          setDraft(undefined);
        }}
      >
        Cancel
      </button>
      {update.isError ? <ErrorView error={update.error} title="The engine refused the description" /> : null}
    </form>
  );
}
