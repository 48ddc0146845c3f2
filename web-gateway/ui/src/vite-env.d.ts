/// <reference types="vite/client" />

declare module "virtual:metaschemas" {
  interface AjvError {
    instancePath: string;
    schemaPath: string;
    keyword: string;
    params: Record<string, unknown>;
    message?: string;
  }
  type StandaloneValidator = ((data: unknown) => boolean) & { errors?: AjvError[] | null };
  export const meta202012: StandaloneValidator;
  export const meta201909: StandaloneValidator;
  export const metaDraft07: StandaloneValidator;
}
