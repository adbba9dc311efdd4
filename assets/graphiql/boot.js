// Starts GraphiQL against this service: queries and mutations over HTTP POST to /graphql,
// subscriptions over a WebSocket on the same path (graphql-transport-ws).
(function () {
  var http = new URL('/graphql', window.location.href);
  var ws = new URL('/graphql', window.location.href);
  ws.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: http.href,
    subscriptionUrl: ws.href,
    headers: { accept: 'application/graphql-response+json, application/json' },
  });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      // A pasted token stays in this tab only.
      shouldPersistHeaders: false,
    }),
  );
})();
