// Erase an instance (the right to erasure; admin scope): its state, payloads, metadata, snapshots
// and external id are destroyed, and only the facts stay (versions, event types, times) with an
// InstanceErased event. It cannot be undone, so the dialog asks for the external id typed out
// before its button works. The page of the instance is addressed by that external id, which is
// gone afterwards: the user lands on the instances list with a notice.
import { useState } from "react";
import { useNavigate } from "react-router";
import { useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { InstanceService, type Instance } from "@temporal-state/client";
import { ErrorView } from "../../components/Status";
import { ConfirmDialog } from "../../components/Confirm";
import { instancesPath } from "../../lib/url";

export function useErase(type: string) {
  const [confirming, setConfirming] = useState(false);
  const navigate = useNavigate();
  const qc = useQueryClient();
  const erase = useMutation(InstanceService.method.eraseInstance, {
    onSuccess: (_answer, request) => {
      // Nothing is re-read here (this page's external id is gone): the list reads afresh.
      void qc.invalidateQueries({ refetchType: "none" });
      navigate(instancesPath(type), {
        state: { notice: `Erased instance ${request.instanceId ?? ""}: its data is destroyed; its history keeps the facts.` },
      });
    },
  });
  return { confirming, setConfirming, erase };
}

export function EraseButton({ state }: { state: ReturnType<typeof useErase> }) {
  return (
    <button
      type="button"
      className="danger-outline"
      disabled={state.erase.isPending}
      onClick={() => {
        state.erase.reset();
        state.setConfirming(true);
      }}
    >
      {state.erase.isPending ? "Erasing…" : "Erase"}
    </button>
  );
}

export function EraseDialog({ instance, state }: { instance: Instance; state: ReturnType<typeof useErase> }) {
  const { confirming, erase } = state;
  return (
    <>
      {erase.isError ? <ErrorView error={erase.error} title="Erasing failed" /> : null}
      {confirming ? <Confirm instance={instance} state={state} /> : null}
    </>
  );
}

/** Mounted per opening, so the typed name and the reason start empty each time. */
function Confirm({ instance, state }: { instance: Instance; state: ReturnType<typeof useErase> }) {
  const [typed, setTyped] = useState("");
  const [reason, setReason] = useState("");
  const { setConfirming, erase } = state;
  const name = instance.externalId;
  return (
    <ConfirmDialog
      title={`Erase ${name}?`}
      confirmLabel="Erase for good"
      danger
      confirmDisabled={typed !== name}
      onCancel={() => setConfirming(false)}
      onConfirm={() => {
        setConfirming(false);
        erase.mutate({ instanceId: instance.id, reason: reason.trim() || undefined });
      }}
    >
      <p>
        Its state, every event's payload and metadata, its snapshots and its external id are destroyed, in the store,
        the cache and the event stream. What stays: that it existed, its versions, event types and times, and an{" "}
        <code>InstanceErased</code> event saying who erased it. <strong>This cannot be undone.</strong>
      </p>
      <div className="form">
        <label htmlFor="erase-name">
          Type <code>{name}</code> to confirm
        </label>
        <input id="erase-name" value={typed} onChange={(e) => setTyped(e.target.value)} autoComplete="off" />
        <label htmlFor="erase-reason">Reason (optional; kept after the erasure, so it must not repeat the data)</label>
        <input id="erase-reason" value={reason} onChange={(e) => setReason(e.target.value)} autoComplete="off" maxLength={1024} />
      </div>
    </ConfirmDialog>
  );
}
