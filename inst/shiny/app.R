# A Shiny app that stays responsive while a slow computation runs in a mirai.
#
# Run it with: shiny::runApp(system.file("shiny", package = "mirai"))
#
# The button sends a slow computation to a daemon as a mirai. Its result
# reaches the page through a promise (`mirai(...) %...>% f`), so the R process
# serving the app is never blocked: the clock keeps ticking, in this session
# and in every other one, while the computation runs.

library(shiny)
library(promises)
library(mirai)

# Two background R processes for the whole app, shared by all sessions;
# stopped when the app stops.
daemons(2)
onStop(function() daemons(0))

ui <- fluidPage(
  titlePanel("mirai and Shiny"),
  numericInput("n", "n", value = 100, min = 1),
  actionButton("go", "Sum the squares of 1 to n (takes 3 seconds)"),
  h4("Result"),
  textOutput("result"),
  h4("Server clock"),
  textOutput("clock")
)

server <- function(input, output, session) {
  result <- reactiveVal("Press the button to start.")

  observeEvent(input$go, {
    n <- input$n
    req(n >= 1)
    result("Computing...")
    # mirai() returns at once; the expression is evaluated on a daemon.
    # Variables it needs are passed by name (`n = n`).
    m <- mirai(
      {
        start <- Sys.time()
        Sys.sleep(3)
        list(value = sum(as.numeric(seq_len(n))^2), pid = Sys.getpid(),
             start = start, end = Sys.time())
      },
      n = n
    )
    # Once the mirai resolves, its promise hands the value to the callback,
    # which updates `result`; an error on the daemon rejects the promise.
    m %...>% (function(r) {
      result(sprintf("%s (computed by process %d, from %s to %s)",
                     format(r$value, big.mark = ","), r$pid,
                     format(r$start, "%H:%M:%OS1"), format(r$end, "%H:%M:%OS1")))
    }) %...!% (function(e) result(paste("Error:", conditionMessage(e))))
    # Return nothing, not the promise: Shiny would hold back this session's
    # outputs (the clock too) until a returned promise settles.
    NULL
  })

  output$result <- renderText(result())

  # Re-rendered four times a second by the server.
  output$clock <- renderText({
    invalidateLater(250)
    format(Sys.time(), "%H:%M:%OS1")
  })
}

shinyApp(ui, server)
