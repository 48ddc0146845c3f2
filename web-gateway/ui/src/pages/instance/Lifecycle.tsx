// Archive and restore an instance, each after a confirmation. Both are events in its history
// (InstanceArchived / InstanceRestored, state unchanged); an archived instance refuses writes
// until restored and stays fully readable. An optional reason travels as the event's metadata.
import { useState } from "react";
import { useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { InstanceService, type Instance } from "@temporal-state/client";
import { ErrorView } from "../../components/Status";
import { ConfirmDialog } from "../../components/Confirm";

export function useLifecycle(onChanged: () => void) {
  const [confirming, setConfirming] = useState(false);
  const qc = useQueryClient();
  const done = {
    onSuccess: () => {
      void qc.invalidateQueries();
      onChanged();
    },
  };
  const archive = useMutation(InstanceService.method.archiveInstance, done);
  const restore = useMutation(InstanceService.method.restoreInstance, done);
  return { confirming, setConfirming, archive, restore, pending: archive.isPending || restore.isPending };
}

export function LifecycleButton({ instance, state }: { instance: Instance; state: ReturnType<typeof useLifecycle> }) {
  return (
    <button
      type="button"
      className={instance.archived ? "primary" : undefined}
      disabled={state.pending}
      onClick={() => {
        state.archive.reset();
        state.restore.reset();
        state.setConfirming(true);
      }}
    >
      {state.pending ? (instance.archived ? "Restoring…" : "Archiving…") : instance.archived ? "Restore" : "Archive"}
    </button>
  );
}

export function LifecycleDialog({ instance, state }: { instance: Instance; state: ReturnType<typeof useLifecycle> }) {
  const { confirming, archive, restore } = state;
  const failed = archive.isError ? archive.error : restore.isError ? restore.error : null;
  return (
    <>
      {failed ? <ErrorView error={failed} title={archive.isError ? "Archiving failed" : "Restoring failed"} /> : null}
      {confirming ? <Confirm instance={instance} state={state} /> : null}
    </>
  );
}

/** Mounted per opening, so the reason starts empty each time. */
function Confirm({ instance, state }: { instance: Instance; state: ReturnType<typeof useLifecycle> }) {
  const [reason, setReason] = useState("");
  const { setConfirming, archive, restore } = state;
  const name = instance.externalId;
  const metadata = reason.trim() ? { reason: reason.trim() } : undefined;
  return (
    <ConfirmDialog
      title={instance.archived ? `Restore ${name}?` : `Archive ${name}?`}
      confirmLabel={instance.archived ? "Restore" : "Archive"}
      onCancel={() => setConfirming(false)}
      onConfirm={() => {
        setConfirming(false);
        if (instance.archived) restore.mutate({ instanceId: instance.id, metadata });
        else archive.mutate({ instanceId: instance.id, metadata });
      }}
    >
      {instance.archived ? (
        <p>
          It becomes writable again. Recorded as an <code>InstanceRestored</code> event; the state is unchanged.
        </p>
      ) : (
        <p>
          An archived instance refuses events until it is restored, and is left out of the instances list unless
          archived ones are asked for. Its state, history and time travel stay readable. Recorded as an{" "}
          <code>InstanceArchived</code> event; the state is unchanged.
        </p>
      )}
      <div className="form">
        <label htmlFor="lifecycle-reason">Reason (optional, stored as the event's metadata)</label>
        <input id="lifecycle-reason" value={reason} onChange={(e) => setReason(e.target.value)} autoComplete="off" />
      </div>
    </ConfirmDialog>
  );
}
