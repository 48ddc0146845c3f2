// Shared queries: types and instances by name, resolved once and cached (names never change).
import { useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { EntityTypeService, InstanceService } from "@temporal-state/client";

export function useEntityType(type: string | undefined) {
  return useQuery(EntityTypeService.method.getEntityType, type ? { entityType: type } : skipToken, {
    staleTime: Infinity,
    select: (r) => r.entityType,
  });
}

export function useInstanceById(instanceId: string | undefined) {
  return useQuery(InstanceService.method.getInstance, instanceId ? { instanceId } : skipToken, {
    staleTime: 60_000,
    select: (r) => r.instance,
  });
}
