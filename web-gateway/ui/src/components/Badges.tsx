// Small labels next to a name.
export function ArchivedBadge() {
  return (
    <span className="badge badge-archived" title="Archived: refuses writes until restored">
      archived
    </span>
  );
}
