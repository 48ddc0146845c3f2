// Delete a type: only one without instances (the engine answers FAILED_PRECONDITION otherwise,
// shown as it says it). After a confirmation; back to the types list when done.
import { useState } from "react";
import { useNavigate } from "react-router";
import { useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { EntityTypeService } from "@temporal-state/client";
import { ErrorView } from "../../components/Status";
import { ConfirmDialog } from "../../components/Confirm";

export function useDeleteType(type: string) {
  const [confirming, setConfirming] = useState(false);
  const navigate = useNavigate();
  const qc = useQueryClient();
  const del = useMutation(EntityTypeService.method.deleteEntityType, {
    onSuccess: () => {
      // Everything cached is stale now, but nothing is re-read here (this page's type is gone):
      // the list the user lands on reads afresh.
      void qc.invalidateQueries({ refetchType: "none" });
      navigate("/types", { state: { notice: `Deleted the entity type ${type}.` } });
    },
  });
  return { confirming, setConfirming, del };
}

export function DeleteTypeDialog({
  type,
  instanceCount,
  state,
}: {
  type: string;
  /** From the type's summary, when known. */
  instanceCount: bigint | undefined;
  state: ReturnType<typeof useDeleteType>;
}) {
  const { confirming, setConfirming, del } = state;
  return (
    <>
      {del.isError ? <ErrorView error={del.error} title={`Deleting ${type} failed`} /> : null}
      {confirming ? (
        <ConfirmDialog
          title={`Delete the entity type ${type}?`}
          confirmLabel="Delete type"
          danger
          onCancel={() => setConfirming(false)}
          onConfirm={() => {
            setConfirming(false);
            del.mutate({ entityType: type });
          }}
        >
          <p>The type and every version of its schema are deleted. This cannot be undone.</p>
          {instanceCount !== undefined && instanceCount > 0n ? (
            <p className="field-error">
              It has {instanceCount.toString()} instance{instanceCount === 1n ? "" : "s"}: the engine deletes only a type
              without instances, and will refuse.
            </p>
          ) : (
            <p className="muted">Only a type without instances (archived ones included) can be deleted.</p>
          )}
        </ConfirmDialog>
      ) : null}
    </>
  );
}
