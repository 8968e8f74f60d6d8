// OHIF viewer configuration of the compose deployment (docker/compose.yaml): the viewer and
// DICOMweb on one origin (the nginx proxy), no login. For a node that requires OpenID Connect
// tokens use conf/ohif/app-config.js instead.
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
  defaultDataSourceName: 'pacs',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'pacs',
      configuration: {
        friendlyName: 'pacs nodes',
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
