// OHIF viewer (3.13) configuration for a pacs node that serves the viewer itself and asks for
// OpenID Connect bearer tokens (`pacs serve --viewer-dir DIR --oidc-issuer ISSUER
// --oidc-audience AUD`).
//
// Install: copy an OHIF build (e.g. the `dist/` folder of the npm package @ohif/app) to DIR,
// replace DIR/app-config.js with this file and edit the three constants below. (The
// end-to-end tests do this with `node tests/e2e/ohif.mjs prepare DIR ROOT --oidc ISSUER`.)
//
// The viewer logs in with the authorization code flow and PKCE as a public client (no
// secret), then sends `Authorization: Bearer <access token>` on every DICOMweb request (QIDO-RS,
// series metadata, frames, bulk data, SEG/SR retrieval). At the identity provider, register:
//   - a public client with the id OIDC_CLIENT_ID, grant types authorization_code (and
//     refresh_token: the viewer renews its token with it before it expires),
//   - redirect URIs  https://NODE/callback  and  https://NODE/silent-refresh.html,
//     post-logout redirect URI  https://NODE/logout-redirect.html,
//   - CORS (web origin) https://NODE: the browser calls the token endpoint from the viewer,
//   - access tokens as JWTs whose `aud` is the node's --oidc-audience and whose roles claim
//     (--oidc-roles-claim, default `roles`) lists the user's roles (viewer, technologist,
//     radiologist, admin). With Keycloak: an audience mapper, and the realm roles at
//     `realm_access.roles`.
// The node answers requests without a valid token with 401 and tokens without the read
// permission with 403; the viewer shows both as a "Data Source Connection Error".

// The identity provider's issuer URL (its discovery document is ISSUER/.well-known/openid-configuration).
const OIDC_AUTHORITY = 'https://idp.example.org/realms/hospital';
// The viewer's client id at the identity provider.
const OIDC_CLIENT_ID = 'ohif';
// The node's DICOMweb root; same origin as the viewer (the node serves both).
const DICOMWEB_ROOT = `${window.location.origin}/dicom-web`;

window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [],
  modes: [],
  customizationService: {},
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  maxNumRequests: { interaction: 100, thumbnail: 75, prefetch: 25 },
  oidc: [
    {
      authority: OIDC_AUTHORITY,
      client_id: OIDC_CLIENT_ID,
      // relative to the viewer's origin; OHIF handles both routes itself
      redirect_uri: '/callback',
      silent_redirect_uri: '/silent-refresh.html',
      post_logout_redirect_uri: '/logout-redirect.html',
      // `code`: OHIF's oidc-client-ts client, authorization code flow with PKCE (S256)
      response_type: 'code',
      scope: 'openid profile',
      automaticSilentRenew: true,
      revokeAccessTokenOnSignout: true,
    },
  ],
  defaultDataSourceName: 'pacs',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'pacs',
      configuration: {
        friendlyName: 'pacs node',
        name: 'pacs',
        qidoRoot: DICOMWEB_ROOT,
        wadoRoot: DICOMWEB_ROOT,
        wadoUriRoot: DICOMWEB_ROOT,
        qidoSupportsIncludeField: true,
        supportsReject: false,
        dicomUploadEnabled: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
